"""``crash_sweep``: one saga, crashed and recovered at every point a run of it reaches."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, JSONObject, SagaInstance, StepStatus
from sagakit.saga import Saga, WaitFor
from sagakit.store import MemoryStore, SagaStore
from sagakit.testing.kit import (
    CrashPoint,
    EffectLedger,
    FakeClock,
    SimulatedCrash,
    restart,
)

#: The saga to sweep, or an async function building it afresh for each run on that run's
#: store (new participants, new data): ``async def build(store: SagaStore) -> Saga``.
SagaSource = Saga | Callable[[SagaStore], Awaitable[Saga]]
#: A store for each run (``MemoryStore`` by default): ``lambda: SqliteStore.open(url)``.
StoreFactory = Callable[[], Awaitable[SagaStore]]
#: Told of each run's ended saga; raises ``AssertionError`` when an invariant of yours broke.
Check = Callable[[SagaInstance], Awaitable[None]]


@dataclass
class SweepReport:
    """What a sweep did: the run without a crash, then one run per point it reached."""

    #: The status every run ended in (the one a run without a crash ends in).
    status: str
    #: Every crash point the run without a crash reached, in order; a point reached again
    #: (a retry, a second compensation attempt) is written ``point:step#n``.
    points: list[str] = field(default_factory=list)
    #: The points whose run did not reach them (a run that took another path after a crash).
    unreached: list[str] = field(default_factory=list)
    #: ``point: what broke``, for every point whose run broke a rule.
    failures: list[str] = field(default_factory=list)


class _Probe:
    """Records every point reached; with a target, crashes at its ``nth`` occurrence."""

    def __init__(self, target: tuple[str, str, int] | None = None) -> None:
        self.target = target
        self.seen: list[tuple[str, str]] = []
        self.fired = 0

    def __call__(self, point: str, step: str) -> None:
        self.seen.append((point, step))
        if self.target is not None and self.target == (point, step, self.seen.count((point, step))):
            self.fired += 1
            raise SimulatedCrash(f"{point}:{step}")


async def crash_sweep(
    saga: SagaSource,
    input: JSONObject,
    *,
    ledger: EffectLedger | None = None,
    signals: Mapping[str, JSON] | None = None,
    store: StoreFactory | None = None,
    check: Check | None = None,
    timeout: float = 10.0,
) -> SweepReport:
    """Run ``saga`` with ``input`` once without a crash, then once per crash point that run
    reached (forward, backward, parallel members, waits), crashing there and recovering as
    a new process would; raise ``AssertionError`` naming each point where a rule broke.

    The rules, for every crashed run: the saga ends, in the status of the run without a
    crash; with a ``ledger`` (which the sweep empties before each run), no effect is applied
    or undone twice, nothing is undone that was not applied, and each step's effects applied
    and undone are as many as without a crash; and ``check(ended)`` passes. ``signals``
    are delivered as the saga waits for them (a ``WaitFor`` whose signal is missing waits
    out its deadline). Retry backoffs take no time. Returns the :class:`SweepReport`.
    """
    runner = _Runner(saga, input, ledger, dict(signals or {}), store, check, timeout)
    try:
        baseline, probe, effects = await runner.run(_Probe())
    except TimeoutError:
        raise AssertionError(
            f"crash_sweep: the run without a crash did not end within {timeout}s"
            " (a WaitFor whose signal is not in signals=, and no deadline?)"
        ) from None
    counts: Counter[tuple[str, str]] = Counter()
    targets: list[tuple[str, str, int]] = []
    for point, step in probe.seen:
        counts[(point, step)] += 1
        targets.append((point, step, counts[(point, step)]))
    report = SweepReport(status=baseline.status.value)
    for point, step, nth in targets:
        name = str(CrashPoint(point, step)) + (f"#{nth}" if nth > 1 else "")
        report.points.append(name)
        try:
            ended, crashed, got = await runner.run(_Probe((point, step, nth)))
            if not crashed.fired:
                report.unreached.append(name)
            _check(ended.status == baseline.status, f"ended {ended.status}, not {baseline.status}")
            _check(got == effects, f"effects {got} where a run without a crash has {effects}")
        except (AssertionError, TimeoutError) as exc:
            report.failures.append(f"{name}: {exc or 'the saga did not end in time'}")
    if report.failures:
        raise AssertionError(
            f"crash_sweep of {baseline.name!r}: {len(report.failures)} of {len(targets)} crash"
            " points broke a rule:\n  " + "\n  ".join(report.failures)
        )
    return report


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


class _Runner:
    """One run of the saga, with a probe, through every crash and restart, then its checks."""

    def __init__(
        self,
        saga: SagaSource,
        input: JSONObject,
        ledger: EffectLedger | None,
        signals: dict[str, JSON],
        store: StoreFactory | None,
        check: Check | None,
        timeout: float,
    ) -> None:
        self.saga, self.input, self.ledger, self.signals = saga, input, ledger, signals
        self.store, self.check, self.timeout = store, check, timeout

    async def run(self, probe: _Probe) -> tuple[SagaInstance, _Probe, dict[str, tuple[int, int]]]:
        """The ended saga, the probe, and per step the keys applied and undone."""
        if self.ledger is not None:
            self.ledger.entries.clear()
        store = await self.store() if self.store is not None else MemoryStore()
        try:
            saga = self.saga if isinstance(self.saga, Saga) else await self.saga(store)
            ended = await self._drive(store, saga, probe)
            if self.check is not None:
                await self.check(ended)
        finally:
            await store.close()
        effects: dict[str, tuple[int, int]] = {}
        if self.ledger is not None:
            self.ledger.assert_no_duplicates()
            for entry in self.ledger.entries:
                done, undone = effects.get(entry.step, (0, 0))
                effects[entry.step] = (done + (not entry.undo), undone + entry.undo)
        return ended, probe, effects

    async def _drive(self, store: SagaStore, saga: Saga, probe: _Probe) -> SagaInstance:
        current = SagaOrchestrator(store, [saga], sleep=FakeClock().sleep, probe=probe)
        made = [current]
        pending = dict(self.signals)
        try:
            async with asyncio.timeout(self.timeout):
                saga_id = (await current.start(saga.name, self.input)).saga_id
                while True:
                    before = probe.fired
                    instance = await _settle(current, saga_id)
                    if instance is not None and not instance.status.is_active:
                        return instance
                    if probe.fired == before:
                        await self._nudge(current, saga, instance, pending)
                    if probe.fired > before:  # the process died: a new one takes over
                        current = await restart(current)
                        made.append(current)
        finally:
            for orchestrator in made:
                await orchestrator.shutdown(grace=0)

    async def _nudge(
        self,
        current: SagaOrchestrator,
        saga: Saga,
        instance: SagaInstance | None,
        pending: dict[str, JSON],
    ) -> None:
        """Deliver a signal the parked saga waits for, or let time pass and recover."""
        waits = {s.name: s.signal for s in saga.steps if isinstance(s, WaitFor)}
        wanted = [
            waits[r.name]
            for r in (instance.steps if instance is not None else ())
            if r.status is StepStatus.WAITING and r.name in waits
        ]
        name = next((signal for signal in wanted if signal in pending), None)
        if instance is None or name is None:
            await asyncio.sleep(0.02)
            await current.recover()
            return
        with contextlib.suppress(SimulatedCrash):  # the probe counted it: the caller restarts
            await current.signal(instance.saga_id, name, pending.pop(name))


async def _settle(orchestrator: SagaOrchestrator, saga_id: str) -> SagaInstance | None:
    """The saga once its driver in ``orchestrator`` has stopped (ended, parked or died)."""
    # The kit belongs to the package: it may look at the orchestrator's driver tasks.
    task = orchestrator._running.get(saga_id)
    if task is not None:
        with contextlib.suppress(SimulatedCrash, Exception):
            await asyncio.shield(task)
    return await orchestrator.store.get(saga_id)
