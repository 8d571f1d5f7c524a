"""Saga definitions: steps, their policies, and the context they run with. No I/O here."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, overload

from typing_extensions import TypeVar

from sagakit.records import JSON, JSONObject, OutboxMessage
from sagakit.retry import DEFAULT_COMPENSATION_RETRY, DEFAULT_RETRY, RetryPolicy
from sagakit.typed import input_json, result_json, typed_context

if TYPE_CHECKING:
    from pydantic import BaseModel

#: Seconds one attempt of a step's action or compensation may take, unless it says otherwise.
DEFAULT_TIMEOUT: Final = 30.0


#: A saga's input as a step sees it: JSON, or the saga's input model (``StepContext[Order]``).
InputT = TypeVar("InputT", default=JSONObject)
#: A step's own result as its compensation sees it: JSON, or the step's result model.
ResultT = TypeVar("ResultT", default=JSON)
ModelT = TypeVar("ModelT", bound="BaseModel")


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext(Generic[InputT, ResultT]):
    """What a step's ``do`` or ``compensate`` is given.

    ``idempotency_key`` is the same for every attempt of this step in this saga, across
    crashes and processes: participants deduplicate by it. ``result`` is this step's own
    stored result (only in ``compensate``; ``None`` when the action's outcome is unknown).
    In a typed saga (``Saga(..., input=Model)``, ``@step(..., result=Model)``) the
    functions of ``@step`` get ``input`` and ``result`` as those models:
    ``StepContext[Order, Charge]``; ``results`` (the earlier steps') stay JSON.
    """

    saga_id: str
    saga_name: str
    step: str
    input: InputT
    results: Mapping[str, JSON]
    idempotency_key: str
    attempt: int
    result: ResultT | None = None


def idempotency_key(saga_id: str, step: str) -> str:
    """The key every attempt of step ``step`` of saga ``saga_id`` carries."""
    return f"{saga_id}:{step}"


class Step:
    """One unit of a saga: ``do`` performs it, ``compensate`` undoes it.

    Subclass it and set ``name``. ``do`` raises :class:`~sagakit.errors.StepFailed` for a
    business rejection; any other exception is transient and retried per ``retry``.
    ``compensate`` must be idempotent and a no-op when ``do`` never applied anything.
    """

    name: str = ""
    retry: RetryPolicy = DEFAULT_RETRY
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    #: Seconds one attempt of ``do`` or ``compensate`` may take; ``None`` for no limit.
    timeout: float | None = DEFAULT_TIMEOUT

    async def do(self, ctx: StepContext) -> JSON:
        """Perform the step; the value returned is stored and passed on."""
        raise NotImplementedError

    async def compensate(self, ctx: StepContext) -> None:
        """Undo the step. The default does nothing (for steps with nothing to undo)."""

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        """The action as a *local action* of ``store``, or ``None`` to run :meth:`do`.

        A participant that keeps its tables in the saga store's own database can return a
        function the store runs inside the transaction that records the step's outcome:
        its effect, its inbox row, "step succeeded" and "next step started" commit
        together, or not at all. Each store says what it accepts (``SqliteStore``: a
        ``SqliteAction``; ``PostgresStore``: a ``PostgresAction``). The action raises
        ``StepFailed`` for a business refusal, as ``do`` does: what it wrote before that
        (its inbox row recording the refusal) is kept, and no success is recorded.
        """
        return None

    def local_compensation(self, ctx: StepContext, store: object) -> object | None:
        """The compensation as a local action of ``store``, or ``None`` to run
        :meth:`compensate`.

        Offered with :meth:`local_action`, it lets a saga whose steps are all local run
        whole, business refusals and their compensations included, as one transaction
        (``sagakit.unit``). Its result is ignored; it must be idempotent by the key and
        leave a tombstone, as :meth:`compensate` must.
        """
        return None

    def after_compensation(self, ctx: StepContext, outcome: JSON) -> None:
        """Told, once it is durable, that :meth:`local_compensation`'s action ran inside
        a saga's one unit and returned ``outcome`` (for a log line, say: the action itself
        runs inside a transaction that may still roll back). The default does nothing.
        """

    def outgoing(self, ctx: StepContext, *, compensation: bool) -> OutboxMessage | None:
        """A message to write to the outbox with this attempt's start, or ``None``.

        Called as the orchestrator records an attempt of ``do`` (``compensation=False``:
        the step's start, a retry, a rerun after a crash) or of ``compensate``; the message
        is written in the transaction that records that attempt, so it exists if and only if
        the attempt is recorded, and a relay publishes it (the AMQP transport's does). ``do``
        or ``compensate`` then waits for the answer. Keep it quick and free of I/O: after a
        local action it is called inside the store's transaction (SQLite: on its writer
        thread), so that ``ctx.results`` holds that action's result. The default sends
        nothing; a store without an outbox table (memory) keeps the messages in memory.
        """
        return None


#: A step's action as a function: ``async def charge(ctx: StepContext) -> JSON`` (or, in a
#: typed saga, ``async def charge(ctx: StepContext[Order]) -> Charge``).
Action: TypeAlias = Callable[[StepContext[Any, Any]], Awaitable[Any]]
#: A step's compensation as a function: ``async def refund(ctx: StepContext) -> None``.
Compensation: TypeAlias = Callable[[StepContext[Any, Any]], Awaitable[None]]
CompensationT = TypeVar("CompensationT", bound=Compensation)
#: Not yet in a saga: the first saga a ``@step`` joins gives it its input model.
_UNBOUND: Final[Any] = object()


class FunctionStep(Step):
    """A step made of functions by :func:`step`.

    ``do`` calls the decorated action; ``compensate`` calls the function decorated with
    :meth:`compensation`, and does nothing until one is.
    """

    def __init__(
        self,
        name: str,
        action: Action,
        *,
        retry: RetryPolicy,
        compensation_retry: RetryPolicy,
        timeout: float | None,
        result_model: type[BaseModel] | None = None,
    ) -> None:
        self.name = name
        self.action = action
        self.undo: Compensation | None = None
        self.retry = retry
        self.compensation_retry = compensation_retry
        self.timeout = timeout
        self.result_model = result_model
        #: The input model of the saga this step is in (``None``: JSON), once it is in one.
        self.input_model: type[BaseModel] | None = _UNBOUND

    def join(self, saga: str, input_model: type[BaseModel] | None) -> None:
        """Take the input model of ``saga``, which this step is in."""
        if self.input_model is _UNBOUND:
            self.input_model = input_model
        elif self.input_model is not input_model:
            raise ValueError(
                f"step {self.name!r} of saga {saga!r} is already in a saga with another input"
                " model: make one step per saga"
            )

    async def do(self, ctx: StepContext) -> JSON:
        """Run the action (with models for the input, in a typed saga); store its JSON."""
        model = None if self.input_model is _UNBOUND else self.input_model
        value = await self.action(typed_context(ctx, model, None))
        return result_json(self.result_model, value)

    async def compensate(self, ctx: StepContext) -> None:
        """Run the compensation, if the step has one."""
        if self.undo is not None:
            model = None if self.input_model is _UNBOUND else self.input_model
            await self.undo(typed_context(ctx, model, self.result_model))

    def compensation(self, undo: CompensationT) -> CompensationT:
        """Decorate ``undo`` as this step's compensation; it is returned unchanged."""
        if self.undo is not None:
            raise ValueError(f"step {self.name!r} already has a compensation")
        _require_async(undo)
        self.undo = undo
        return undo

    def __repr__(self) -> str:
        return f"<FunctionStep {self.name!r}>"


@overload
def step(
    name: str,
    *,
    result: None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Callable[[Action], FunctionStep]: ...


@overload
def step(
    name: str,
    *,
    result: type[ModelT],
    retry: RetryPolicy = DEFAULT_RETRY,
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Callable[[Callable[[StepContext[Any, Any]], Awaitable[ModelT]]], FunctionStep]: ...


def step(
    name: str,
    *,
    result: type[BaseModel] | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Callable[[Action], FunctionStep]:
    """Make a :class:`Step` named ``name`` of the decorated ``async def action(ctx)``.

    The name is given rather than taken from the function because it is durable: the store
    records it, and recovery finds the step by it, so renaming the function must not
    orphan the sagas under way. Attach the undo with ``@<step>.compensation``. With
    ``result=Model`` the action returns a ``Model`` (its JSON is stored) and the
    compensation gets it back as ``ctx.result``.
    """

    def decorate(action: Action) -> FunctionStep:
        _require_async(action)
        return FunctionStep(
            name,
            action,
            retry=retry,
            compensation_retry=compensation_retry,
            timeout=timeout,
            result_model=result,
        )

    return decorate


def _require_async(function: Callable[[StepContext], Awaitable[object]]) -> None:
    if not inspect.iscoroutinefunction(function):
        raise TypeError(f"{function!r} must be an async def taking a StepContext")


class WaitFor(Step):
    """A step that waits, durably, for the external signal ``signal`` (its name by default).

    When a saga reaches it, the orchestrator records the step ``waiting`` and stops driving
    the saga; ``SagaOrchestrator.signal(saga_id, signal, payload)`` resumes it, and the
    payload becomes this step's result (later steps read it in ``ctx.results``). A signal
    delivered before the saga waits is kept and consumed when it does. When ``deadline``
    seconds pass after the step started with no signal, the saga compensates, as for a
    step whose retries ran out. ``None`` waits for ever. Waiting applies nothing, so the
    compensation does nothing unless a subclass says otherwise.
    """

    def __init__(self, name: str, *, signal: str | None = None, deadline: float | None) -> None:
        if deadline is not None and deadline <= 0:
            raise ValueError(f"step {name!r}: a deadline is a positive number of seconds")
        self.name = name
        self.signal = signal or name
        self.deadline = deadline

    async def do(self, ctx: StepContext) -> JSON:
        """Never called: the orchestrator waits for the signal instead."""
        raise TypeError(f"step {self.name!r} waits for a signal; it has no action to run")

    def waiting(self) -> str:
        """What the history says while the step waits."""
        return f"waiting for signal {self.signal!r}"

    def __repr__(self) -> str:
        return f"<WaitFor {self.name!r} signal={self.signal!r} deadline={self.deadline!r}>"


class Sleep(WaitFor):
    """A step that parks the saga for ``seconds``, durably, then goes on.

    No process holds the saga while it sleeps: the store keeps when it wakes, and a worker
    of any process connected to the store (``connect()``, ``sagas_lifespan``, ``sagakit
    worker``) resumes it then, after a restart too. The step's result is
    ``{"slept": seconds}``. Its signal (the step's name) ends the sleep early, as an
    operator may: ``sagakit sagas signal SAGA_ID NAME``.
    """

    def __init__(self, name: str, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"step {name!r}: a sleep is a positive number of seconds")
        super().__init__(name, deadline=seconds)
        self.seconds = seconds

    def waiting(self) -> str:
        """What the history says while the saga sleeps."""
        return f"sleeping {self.seconds:g}s"

    def __repr__(self) -> str:
        return f"<Sleep {self.name!r} {self.seconds!r}s>"


class Parallel:
    """Steps that run concurrently inside a saga: ``Saga(name, [a, Parallel(b, c), d])``.

    The group starts in one write; when every member has succeeded, the next step starts.
    When one member is refused or runs out of retries, the saga compensates: the other
    members finish their current attempt, then every member that may have applied its
    effect is compensated (reverse step order), then the steps before the group.
    """

    def __init__(self, *steps: Step) -> None:
        if not steps:
            raise ValueError("a parallel group needs at least one step")
        for member in steps:
            if isinstance(member, WaitFor):
                raise ValueError(f"step {member.name!r}: a WaitFor cannot be in a parallel group")
            if not isinstance(member, Step):
                raise ValueError(f"{member!r} is not a step (parallel groups do not nest)")
        self.steps: tuple[Step, ...] = tuple(steps)

    def __repr__(self) -> str:
        return f"<Parallel {[s.name for s in self.steps]!r}>"


@dataclass(frozen=True, slots=True, init=False)
class Saga:
    """A named, versioned, ordered list of steps and parallel groups of steps.

    ``steps`` is the flat list, in order (a group's members in the order given); ``groups``
    lists each group's step indices, a single step being a group of one.
    """

    name: str
    steps: tuple[Step, ...]
    version: int
    step_names: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    #: For each step index, the indices of its group (itself alone for a plain step).
    group_of: tuple[tuple[int, ...], ...] = field(repr=False, compare=False)
    #: The indices of the steps that send messages (override :meth:`Step.outgoing`).
    senders: frozenset[int] = field(repr=False, compare=False)
    #: The pydantic model of the input (``None``: any JSON object).
    input_model: type[BaseModel] | None = field(repr=False, compare=False)
    #: Seconds after its start past which a running instance is cancelled (``None``: never).
    deadline: float | None = field(repr=False, compare=False)
    #: Whether a group has more than one step (members then run, and write, concurrently).
    parallel: bool = field(repr=False, compare=False)

    def __init__(
        self,
        name: str,
        steps: Sequence[Step | Parallel],
        version: int = 1,
        *,
        input: type[BaseModel] | None = None,
        deadline: float | None = None,
    ) -> None:
        flat: list[Step] = []
        groups: list[tuple[int, ...]] = []
        for item in steps:
            members = item.steps if isinstance(item, Parallel) else (item,)
            groups.append(tuple(range(len(flat), len(flat) + len(members))))
            flat.extend(members)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "steps", tuple(flat))
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "groups", tuple(groups))
        object.__setattr__(self, "group_of", tuple(g for g in groups for _ in g))
        object.__setattr__(self, "parallel", any(len(g) > 1 for g in groups))
        sends = {i for i, s in enumerate(flat) if type(s).outgoing is not Step.outgoing}
        object.__setattr__(self, "senders", frozenset(sends))
        names = tuple(step.name for step in flat)
        if not self.name:
            raise ValueError("a saga needs a name")
        if not names or any(not n for n in names):
            raise ValueError(f"saga {self.name!r}: every step needs a name")
        if len(set(names)) != len(names):
            raise ValueError(f"saga {self.name!r}: step names must be unique")
        object.__setattr__(self, "step_names", names)
        object.__setattr__(self, "input_model", input)
        if deadline is not None and not deadline > 0:
            raise ValueError(f"saga {name!r}: a deadline is a positive number of seconds")
        object.__setattr__(self, "deadline", deadline)
        for member in flat:
            if isinstance(member, FunctionStep):
                member.join(name, input)

    def input_json(self, input: JSONObject | BaseModel) -> JSONObject:
        """The JSON to store for ``input``: validated by the input model, if the saga has one.

        Raises :class:`~sagakit.errors.InvalidInput` when it does not fit.
        """
        return input_json(self.name, self.input_model, input)

    def opening_messages(self, saga_id: str, input: JSONObject) -> tuple[OutboxMessage, ...]:
        """The messages the first group's steps send with their first attempt, which the
        saga's start records (see :meth:`Step.outgoing`)."""
        messages = []
        for index in self.groups[0]:
            if index in self.senders:
                name = self.step_names[index]
                ctx = StepContext(
                    saga_id=saga_id,
                    saga_name=self.name,
                    step=name,
                    input=input,
                    results={},
                    idempotency_key=idempotency_key(saga_id, name),
                    attempt=1,
                )
                if (message := self.steps[index].outgoing(ctx, compensation=False)) is not None:
                    messages.append(message)
        return tuple(messages)
