"""The kit's parts: virtual time, crash points and restarts, and the effect ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from time import time as _wall_clock
from typing import Final

from sagakit.errors import SagaNotFound
from sagakit.orchestrator import Probe, SagaOrchestrator, Sleep
from sagakit.records import JSON, SagaInstance
from sagakit.saga import Saga, StepContext, WaitFor
from sagakit.saga import Sleep as SleepStep
from sagakit.store import MemoryStore

__all__ = [
    "POINTS",
    "CrashAt",
    "CrashPoint",
    "Effect",
    "EffectLedger",
    "FakeClock",
    "MemoryStore",
    "SimulatedCrash",
    "crash_points",
    "restart",
    "wait_through_crashes",
]


class FakeClock:
    """Virtual time: :meth:`sleep` returns at once and moves :attr:`now` on.

    ``SagaOrchestrator(store, sagas, sleep=clock.sleep)`` skips every retry backoff;
    :attr:`slept` lists the delays asked for, so a test can check them. Pass
    ``clock=clock.time`` to the orchestrator and to ``MemoryStore`` too, and deadlines
    (a ``WaitFor``'s) and leases pass when the clock is advanced, without waiting.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self._epoch = _wall_clock()

    def time(self) -> float:
        """The virtual wall clock: the real time at creation, plus :attr:`now`."""
        return self._epoch + self.now

    async def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` without waiting."""
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)  # still a point where other tasks run, as a real sleep is

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``."""
        self.now += max(0.0, seconds)


#: The points of the state machine where a probe is called: each one lies between two
#: recorded transitions. A step with an action meets ``before_do`` and ``after_do``, a
#: ``WaitFor`` ``before_wait`` and ``after_wait`` (once parked), and its signal
#: ``after_signal`` (named by the signal, once stored); a compensated step meets
#: ``before_compensate`` and ``after_compensate``.
POINTS: Final = (
    "before_do",
    "after_do",
    "before_compensate",
    "after_compensate",
    "before_wait",
    "after_wait",
    "after_signal",
)


class SimulatedCrash(BaseException):  # like LeaseLost: step code must not swallow it
    """The process died here (a test's crash point)."""


@dataclass(frozen=True, slots=True)
class CrashPoint:
    """A place to crash: one of :data:`POINTS` of one step (of one signal for
    ``after_signal``)."""

    point: str
    step: str

    def __post_init__(self) -> None:
        if self.point not in POINTS:
            raise ValueError(f"unknown point {self.point!r}: one of {', '.join(POINTS)}")

    @classmethod
    def parse(cls, spec: str) -> CrashPoint:
        """The point written ``"after_do:charge"``."""
        point, sep, step = spec.partition(":")
        if not sep or not step:
            raise ValueError(f"a crash point is written 'point:step', not {spec!r}")
        return cls(point, step)

    def __str__(self) -> str:
        return f"{self.point}:{self.step}"


def crash_points(saga: Saga) -> list[CrashPoint]:
    """Every point of ``saga`` where a crash can happen, in the order a run reaches them.

    Forward points come in step order (a ``WaitFor`` has no action: its points are
    ``before_wait``, ``after_wait`` and its signal's ``after_signal``), compensation points
    newest step first. A given run reaches only some: a completed saga never compensates,
    a step that refuses never reaches its ``after_do``, and the last step is never
    compensated. :func:`~sagakit.testing.crash_sweep` finds the ones a run reaches.
    """
    forward: list[CrashPoint] = []
    for member in saga.steps:
        if isinstance(member, WaitFor):
            forward += [
                CrashPoint("before_wait", member.name),
                CrashPoint("after_wait", member.name),
            ]
            if not isinstance(member, SleepStep):  # nobody signals a sleep (but an operator)
                forward.append(CrashPoint("after_signal", member.signal))
        else:
            forward += [CrashPoint("before_do", member.name), CrashPoint("after_do", member.name)]
    backward = [
        CrashPoint(p, s)
        for s in reversed(saga.step_names)
        for p in ("before_compensate", "after_compensate")
    ]
    return forward + backward


class CrashAt:
    """A probe that kills the driver at each of ``points``, the first time it gets there.

    ``SagaOrchestrator(..., probe=CrashAt("after_do:charge"))``. The crash is a
    :class:`SimulatedCrash`, a ``BaseException``, so a step's ``except Exception`` cannot
    catch it. :attr:`fired` lists the points reached so far, so a test can check that its
    crash really happened.
    """

    def __init__(self, *points: CrashPoint | str) -> None:
        self.pending = {p if isinstance(p, CrashPoint) else CrashPoint.parse(p) for p in points}
        self.fired: list[CrashPoint] = []

    def __call__(self, point: str, step: str) -> None:
        here = CrashPoint(point, step)
        if here in self.pending:
            self.pending.discard(here)
            self.fired.append(here)
            raise SimulatedCrash(str(here))


async def restart(
    crashed: SagaOrchestrator, *, probe: Probe | None = None, sleep: Sleep | None = None
) -> SagaOrchestrator:
    """A new process on ``crashed``'s store, after ``crashed``'s process died.

    What ``crashed`` still drives is cancelled (its process is gone) and its leases are
    let go, as their expiry would let them go ``lease_seconds`` later. The new orchestrator
    has ``crashed``'s definitions, lease length, listeners, and its probe and sleep unless
    others are given; it has already recovered every saga left unfinished. Shut it down
    when the test is done with it.
    """
    await crashed.shutdown(grace=0)
    # This module belongs to the package: it may read the orchestrator's own settings.
    successor = SagaOrchestrator(
        crashed.store,
        crashed.sagas,
        lease_seconds=crashed.lease_seconds,
        sleep=sleep or crashed._sleep,
        probe=probe or crashed._probe,
        clock=crashed.clock,
        listeners=crashed.listeners,
    )
    await successor.recover()
    return successor


async def wait_through_crashes(
    orchestrator: SagaOrchestrator, saga_id: str, *, timeout: float = 10.0, restarts: int = 10
) -> SagaInstance:
    """The saga once it has ended, restarting (:func:`restart`) each time its driver dies.

    The orchestrators made on the way are shut down before this returns. Raises
    ``TimeoutError`` after ``timeout`` seconds, and ``AssertionError`` when the saga is
    still unfinished after ``restarts`` restarts (a probe that crashes every run).
    """
    made: list[SagaOrchestrator] = []
    current = orchestrator
    try:
        async with asyncio.timeout(timeout):
            for _ in range(restarts + 1):
                ended = await _until_end_or_crash(current, saga_id)
                if ended is not None:
                    return ended
                current = await restart(current)
                made.append(current)
    finally:
        for successor in made:
            await successor.shutdown()
    raise AssertionError(f"saga {saga_id} still unfinished after {restarts} restarts")


async def _until_end_or_crash(orchestrator: SagaOrchestrator, saga_id: str) -> SagaInstance | None:
    """The ended saga, or ``None`` once its driver here has died."""
    # No await between the check and ``wait``'s own look at the driver, so a driver that
    # dies in between is still seen by ``wait`` (which then re-raises its crash).
    if saga_id in orchestrator.driving:
        try:
            return await orchestrator.wait(saga_id)
        except SimulatedCrash:
            return None
    instance = await orchestrator.store.get(saga_id)
    if instance is None:
        raise SagaNotFound(f"no saga {saga_id!r}")
    return None if instance.status.is_active else instance


@dataclass(frozen=True, slots=True, kw_only=True)
class Effect:
    """One effect a participant applied (or undid), under its idempotency key."""

    step: str
    key: str
    undo: bool = False
    detail: JSON = None


class EffectLedger:
    """What your test's participants really did, by idempotency key.

    A fake participant calls :meth:`record` when it applies its effect and
    :meth:`record_undo` when it undoes it: after its own check of the key, if it has one,
    so that the ledger sees what a real participant would have done twice. The
    ``assert_*`` methods then check the outcome; each raises ``AssertionError`` saying
    which key broke the rule.
    """

    def __init__(self) -> None:
        self.entries: list[Effect] = []

    def record(self, ctx: StepContext, detail: JSON = None) -> None:
        """The effect of ``ctx``'s step was applied, now."""
        self.entries.append(Effect(step=ctx.step, key=ctx.idempotency_key, detail=detail))

    def record_undo(self, ctx: StepContext, detail: JSON = None) -> None:
        """The effect of ``ctx``'s step was undone, now."""
        self.entries.append(
            Effect(step=ctx.step, key=ctx.idempotency_key, undo=True, detail=detail)
        )

    def seen(self, ctx: StepContext) -> bool:
        """Whether anything was recorded under ``ctx``'s key: an inbox's question before ``do``.

        A key already undone counts, so that a late action after its compensation is refused.
        """
        return any(e.key == ctx.idempotency_key for e in self.entries)

    def is_applied(self, ctx: StepContext) -> bool:
        """Whether ``ctx``'s effect stands (applied, not undone): the question before an undo."""
        mine = [e for e in self.entries if e.key == ctx.idempotency_key]
        return bool(mine) and not mine[-1].undo

    def effects(self, step: str, *, undo: bool = False) -> list[Effect]:
        """The effects (or undos) recorded for ``step``, oldest first."""
        return [e for e in self.entries if e.step == step and e.undo is undo]

    def _counts(self, step: str) -> dict[str, tuple[int, int]]:
        counts: dict[str, tuple[int, int]] = {}
        for e in self.entries:
            if e.step == step:
                done, undone = counts.get(e.key, (0, 0))
                counts[e.key] = (done + (not e.undo), undone + e.undo)
        return counts

    def assert_applied_once(self, *steps: str) -> None:
        """Each of ``steps`` applied its effect, exactly once per key."""
        for step in steps:
            counts = self._counts(step)
            _check(any(done for done, _ in counts.values()), f"{step!r} applied nothing")
            for key, (done, _) in counts.items():
                _check(done == 1, f"{step!r} applied {done} times under key {key!r}")

    def assert_undone_once(self, *steps: str) -> None:
        """Every effect of ``steps`` was undone exactly once, per key, and nothing was undone
        that was not applied.

        A step that applied nothing passes: a parallel member that never ran, or a step whose
        compensation was a no-op because its action never applied, has nothing to undo. Add
        :meth:`assert_applied_once` where the effect must have happened first.
        """
        for step in steps:
            for key, (done, undone) in self._counts(step).items():
                _check(done <= 1, f"{step!r} applied {done} times under key {key!r}")
                _check(
                    undone == done,
                    f"{step!r} was undone {undone} times but applied {done} under key {key!r}",
                )

    def assert_not_undone(self, *steps: str) -> None:
        """None of ``steps`` undid anything."""
        for step in steps:
            for undo in self.effects(step, undo=True):
                raise AssertionError(f"{step!r} was undone under key {undo.key!r}")

    def assert_untouched(self, *steps: str) -> None:
        """None of ``steps`` applied or undid anything."""
        for step in steps:
            _check(not self._counts(step), f"{step!r} recorded {self._counts(step)}")

    def assert_no_duplicates(self) -> None:
        """No key was applied or undone twice, undone unapplied, or applied after its undo."""
        for step in _unique(e.step for e in self.entries):
            for key, (done, undone) in self._counts(step).items():
                _check(done <= 1, f"{step!r} applied {done} times under key {key!r}")
                _check(undone <= done, f"{step!r} undone {undone}x, applied {done}x: {key!r}")
        for i, entry in enumerate(self.entries):
            late = entry.undo is False and any(
                e.undo and e.key == entry.key for e in self.entries[:i]
            )
            _check(not late, f"{entry.step!r} applied under {entry.key!r} after its undo")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
