"""``sagakit sagas``: list, show, retry, cancel, resolve and signal saga instances.

The commands work on the database itself, so they need no API process. ``retry``,
``cancel`` and ``signal`` drive the saga in this process when no other process holds it,
with a progress bar, until it ends or ``--timeout`` runs out; then a worker carries on.
They know the checkout's sagas, or with ``--app module:attr`` an application's own (a
``Saga``, a list of them, or a function returning them). Every action is recorded in the
saga's history with the actor ``cli:<user>``.

Exit codes: 0 done; 1 refused (unknown saga, wrong state, or the saga did not end as
asked); 2 bad usage or settings (no database there); 3 ``--timeout`` ran out first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import orjson
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from sagakit.cli_tables import (
    console,
    events_table,
    header,
    logs_above,
    saga_table,
    say,
    status_text,
    steps_table,
)
from sagakit.errors import SagakitError, SagaNotFound, StoreError, UnknownSaga
from sagakit.lifecycle import AppNotFound, load_sagas
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaInstance, SagaStatus, StepStatus
from sagakit.settings import Settings
from sagakit.store import SagaStore, open_store
from sagakit.store.activity import stuck_reason, stuck_rule

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
POLL_SECONDS: Final = 0.1
Command = Callable[[argparse.Namespace, Settings], Coroutine[None, None, int]]


class CommandFailed(SagakitError):
    """The command could not do what it was asked."""


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return f"uid {os.getuid()}"


def actor() -> str:
    """Who the history says acted: the CLI and the user running it."""
    return f"cli:{_user()}"


# -- arguments ------------------------------------------------------------------------------


def _saga_id(text: str) -> str:
    if not ID_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a saga id: {text!r}")
    return text


def _instant(text: str) -> float:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 500:
        raise argparse.ArgumentTypeError(f"not a number from 1 to 500: {text!r}")
    return int(text)


def _cursor(text: str) -> str:
    if not text.isdigit() or len(text) > 18:
        raise argparse.ArgumentTypeError(f"not a cursor: {text!r}")
    return text


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 86_400:
        raise argparse.ArgumentTypeError(f"not a number of seconds up to a day: {text!r}")
    return seconds


def _reason(text: str) -> str:
    if not text.strip() or len(text) > 1000:
        raise argparse.ArgumentTypeError("the reason must have 1 to 1000 characters, not blank")
    return text


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sagas`` and its actions to the ``sagakit`` command's subcommands."""
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--database-url", help="sqlite:///path or postgresql://...")
    database.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="your application's sagas (a Saga, a list, or a function returning them);"
        " without it, the checkout's",
    )
    one = argparse.ArgumentParser(add_help=False, parents=[database])
    one.add_argument("saga_id", metavar="SAGA_ID", type=_saga_id, help="the saga's id")
    waits = argparse.ArgumentParser(add_help=False, parents=[one])
    waits.add_argument(
        "--timeout", type=_seconds, default=60.0, help="seconds to wait for the end (default 60)"
    )
    sagas = commands.add_parser(
        "sagas",
        help="list, show, retry, cancel, resolve or signal sagas",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = sagas.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[database], help="a table of sagas, newest first")
    listing.add_argument("--status", choices=[s.value for s in SagaStatus])
    listing.add_argument("--name", help="only sagas of this name (e.g. checkout)")
    listing.add_argument("--key", help="only sagas of this business key (e.g. an order id)")
    listing.add_argument("--after", type=_instant, help="only sagas created at or after (ISO)")
    listing.add_argument("--before", type=_instant, help="only sagas created before (ISO)")
    listing.add_argument("--limit", type=_limit, default=20, help="at most this many (20)")
    listing.add_argument("--cursor", type=_cursor, help="the cursor a listing printed")
    actions.add_parser("show", parents=[one], help="a saga's steps and history")
    actions.add_parser("retry", parents=[waits], help="resume a failed saga's compensation")
    actions.add_parser("cancel", parents=[waits], help="make a running saga compensate")
    resolve = actions.add_parser("resolve", parents=[one], help="mark a failed saga compensated")
    resolve.add_argument("--reason", required=True, type=_reason, help="why, for the history")
    signal = actions.add_parser("signal", parents=[waits], help="send a waiting saga a signal")
    signal.add_argument("name", metavar="NAME", help="the signal's name")
    signal.add_argument(
        "--payload", type=_payload, default=None, help="the signal's payload, as JSON (null)"
    )


def _payload(text: str) -> JSON:
    try:
        value: JSON = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None
    return value


#: Exit codes: done, refused (what the API answers 404 or 409), a setting or the
#: environment (no database there, an unreachable server), a ``--timeout`` that ran out.
EXIT_DONE: Final = 0
EXIT_REFUSED: Final = 1
EXIT_SETTINGS: Final = 2
EXIT_TIMEOUT: Final = 3


#: The command's help: the module's docstring without its reStructuredText markup.
HELP: Final = """sagakit sagas: list, show, retry, cancel, resolve and signal sagas from a shell.

The commands work on the database itself, so they need no API process. retry, cancel
and signal drive the saga in this process when no other process holds it, with a
progress bar, until it ends or --timeout runs out; then a worker carries on. They know
the checkout's sagas, or with --app module:attr an application's own. Every action is
recorded in the saga's history with the actor cli:<user>.

Exit codes: 0 done; 1 refused (unknown saga, wrong state, or the saga did not end as
asked); 2 bad usage or settings (no database there); 3 --timeout ran out first."""


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out ``sagakit sagas ACTION``; the exit code."""
    command = COMMANDS[args.action]
    try:
        return asyncio.run(command(args, settings))
    except StoreError as exc:
        print(f"sagakit: {exc.message} (--database-url / SAGAKIT_DATABASE_URL)", file=sys.stderr)
        return EXIT_SETTINGS
    except AppNotFound as exc:
        print(f"sagakit: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    except SagakitError as exc:
        print(f"sagakit: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED


# -- output ---------------------------------------------------------------------------------

# -- reading --------------------------------------------------------------------------------


def _require_database(url: str) -> None:
    """Refuse an SQLite URL whose file does not exist, rather than create an empty one."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise StoreError(f"no database at {url.removeprefix('sqlite:///')}")


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[SagaStore]:
    """The store of ``settings.database_url``, which must exist, closed afterwards."""
    _require_database(settings.database_url)
    store = await open_store(settings.database_url)
    try:
        yield store
    finally:
        await store.close()


async def list_sagas(args: argparse.Namespace, settings: Settings) -> int:
    """``sagas list``: a table of sagas, newest first, and the counts per status."""
    async with opened(settings) as store:
        page = await store.list_sagas(
            status=SagaStatus(args.status) if args.status else None,
            name=args.name,
            business_key=args.key,
            created_after=args.after,
            created_before=args.before,
            limit=args.limit,
            cursor=args.cursor,
        )
        counts = await store.count_by_status()
    if page.sagas:
        console().print(saga_table(page.sagas, stuck_rule(settings)))
    else:
        say("no sagas match")
    tally = [part for s, n in counts.items() for part in ("  ", status_text(s), f" {n}")]
    say(*tally[1:])
    if page.next_cursor:
        say(f"more: run again with --cursor {page.next_cursor} (and the same filters)")
    return 0


async def show_saga(args: argparse.Namespace, settings: Settings) -> int:
    """``sagas show``: a saga, its steps and its history."""
    async with opened(settings) as store:
        saga = await store.get(args.saga_id)
        if saga is None:
            raise SagaNotFound(f"no saga {args.saga_id!r}")
        events = await store.events(args.saga_id)
    out = console()
    out.print(header(saga, stuck_reason(saga, time.time(), stuck_rule(settings))))
    out.print(steps_table(saga))
    out.print(events_table(events))
    return 0


async def resolve_saga(args: argparse.Namespace, settings: Settings) -> int:
    """``sagas resolve``: mark a failed saga compensated, with the reason."""
    async with opened(settings) as store:
        orchestrator = SagaOrchestrator(store)
        saga = await orchestrator.resolve(args.saga_id, actor=actor(), reason=args.reason)
    say(f"saga {saga.saga_id} is ", status_text(saga.status), ": resolved by hand")
    return 0


# -- actions that wait --------------------------------------------------------------------------


def _known(orchestrator: SagaOrchestrator, saga: SagaInstance) -> bool:
    try:
        orchestrator.definition(saga.name, saga.version)
    except UnknownSaga:
        return False
    return True


def _undo_progress(saga: SagaInstance) -> tuple[int, int]:
    """How many of the saga's steps are compensated, out of those to compensate."""
    undone = sum(s.status is StepStatus.COMPENSATED for s in saga.steps)
    todo = sum(s.status.needs_compensation for s in saga.steps)
    return undone, undone + todo


async def follow(orchestrator: SagaOrchestrator, saga_id: str, timeout: float) -> SagaInstance:
    """Watch ``saga_id`` with a progress bar until it ends or ``timeout`` passes.

    While it waits it takes the saga over when no process holds it (a dead driver's lease
    ran out), and renews the leases of what this process drives.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    renewed = loop.time()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn())
    screen = console(stderr=True)
    # A bar is for a person watching: in a log or a pipe it would only add noise.
    with (
        Progress(
            *columns,
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=screen,
            transient=True,
            disable=not screen.is_terminal,
        ) as progress,
        logs_above(progress),
    ):
        task = progress.add_task(f"saga {saga_id}", total=None)
        while True:
            saga = await orchestrator.store.get(saga_id)
            if saga is None:
                raise SagaNotFound(f"no saga {saga_id!r}")
            undone, total = _undo_progress(saga)
            progress.update(task, description=f"saga {saga_id}: {saga.status}", total=total)
            progress.update(task, completed=undone)
            if not saga.status.is_active or loop.time() >= deadline:
                return saga
            if saga_id not in orchestrator.driving and _known(orchestrator, saga):
                await orchestrator.resume(saga_id)
            if loop.time() - renewed > orchestrator.lease_seconds / 3:
                await orchestrator.renew_leases()
                renewed = loop.time()
            await asyncio.sleep(POLL_SECONDS)


def outcome(saga: SagaInstance, timeout: float) -> int:
    """Print where the saga ended: 0 compensated, 3 still going after ``timeout``, else 1."""
    if saga.status is SagaStatus.COMPENSATED:
        say(f"saga {saga.saga_id} is ", status_text(saga.status))
        return 0
    if saga.status.is_active:
        say(
            f"saga {saga.saga_id} is still ",
            status_text(saga.status),
            f" after {timeout:g}s; a worker (sagakit serve or sagakit worker) will finish it",
        )
        return EXIT_TIMEOUT
    if saga.status is SagaStatus.COMPLETED:
        why = "it finished before its driver saw the request"
    else:
        why = saga.error or "no error recorded"
    print(f"sagakit: saga {saga.saga_id} ended {saga.status}: {why}", file=sys.stderr)
    return 1


@contextlib.asynccontextmanager
async def orchestrating(
    settings: Settings, app: str | None = None
) -> AsyncIterator[SagaOrchestrator]:
    """The orchestrator the service runs (same sagas, same store), without its worker; with
    ``app``, an orchestrator of that application's sagas on the database."""
    _require_database(settings.database_url)
    if app is not None:
        sagas = load_sagas(app)
        orchestrator = await SagaOrchestrator.from_url(
            settings.database_url, sagas, lease_seconds=settings.lease_seconds
        )
        try:
            yield orchestrator
        finally:
            await orchestrator.close(grace=0)  # what is left goes back to the workers
        return
    from sagakit.service import running_service

    quiet = settings.model_copy(update={"demo_data": False})
    async with running_service(quiet, worker=False) as service:
        try:
            yield service.orchestrator
        finally:
            # Whatever is left (the timeout ran out) goes back to the workers at once.
            await service.orchestrator.shutdown(grace=0)


async def retry_saga(args: argparse.Namespace, settings: Settings) -> int:
    """``sagas retry``: resume a failed saga's compensation here, and follow it."""
    async with orchestrating(settings, args.app) as orchestrator:
        saga = await orchestrator.store.get(args.saga_id)
        if saga is None:
            raise SagaNotFound(f"no saga {args.saga_id!r}")
        if saga.status is SagaStatus.FAILED and not _known(orchestrator, saga):
            raise CommandFailed(
                f"the CLI does not know saga {saga.name!r} v{saga.version}: name its"
                " definitions with --app module:attr, or retry it through the API of the"
                " service that defines it"
            )
        await orchestrator.retry(args.saga_id, actor=actor())
        ended = await follow(orchestrator, args.saga_id, args.timeout)
    return outcome(ended, args.timeout)


async def cancel_saga(args: argparse.Namespace, settings: Settings) -> int:
    """``sagas cancel``: ask a running saga to compensate, and follow it."""
    async with orchestrating(settings, args.app) as orchestrator:
        await orchestrator.cancel(args.saga_id, actor=actor())
        ended = await follow(orchestrator, args.saga_id, args.timeout)
    return outcome(ended, args.timeout)


async def signal_saga(args: argparse.Namespace, settings: Settings) -> int:
    """``sagas signal``: deliver a signal to a saga (kept if it does not wait yet), resume
    the saga here, and follow it."""
    async with orchestrating(settings, args.app) as orchestrator:
        new = await orchestrator.signal(args.saga_id, args.name, args.payload)
        ended = await follow(orchestrator, args.saga_id, args.timeout)
    already = "" if new else " (it had been delivered before)"
    say(
        f"signal {args.name!r} delivered{already}; saga {ended.saga_id} is ",
        status_text(ended.status),
    )
    return 0


COMMANDS: Final[dict[str, Command]] = {
    "list": list_sagas,
    "show": show_saga,
    "retry": retry_saga,
    "cancel": cancel_saga,
    "resolve": resolve_saga,
    "signal": signal_saga,
}
