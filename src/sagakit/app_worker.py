"""``sagakit worker --app module:attr``: a worker of an application's own sagas.

It needs only the core. It opens the store, runs :meth:`SagaOrchestrator.run` (lease
renewal, recovery of sagas whose process died, retries and timers) for the sagas that
``--app`` names, and on SIGTERM or SIGINT hands its sagas back and exits ``0``. A bad
``--app``, URL or number, or a database it cannot open, prints one line and exits ``2``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from sagakit.errors import StoreError
from sagakit.lifecycle import AppNotFound, load_sagas
from sagakit.orchestrator import DEFAULT_LEASE_SECONDS, SagaOrchestrator
from sagakit.saga import Saga

logger = logging.getLogger("sagakit.worker")


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagakit worker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--app",
        required=True,
        help="module:attr naming a Saga, a list of them, or a function returning them",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SAGAKIT_DATABASE_URL", "sqlite:///./sagakit.db"),
        help="sqlite:///path, postgresql://... (default $SAGAKIT_DATABASE_URL, else"
        " sqlite:///./sagakit.db)",
    )
    parser.add_argument(
        "--poll-seconds",
        type=_positive,
        default=_positive(os.environ.get("SAGAKIT_POLL_SECONDS", "1")),
        help="how often to look for abandoned sagas (default $SAGAKIT_POLL_SECONDS, else 1)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=_positive,
        default=_positive(os.environ.get("SAGAKIT_LEASE_SECONDS", str(DEFAULT_LEASE_SECONDS))),
        help="how long a silent process keeps its sagas (default $SAGAKIT_LEASE_SECONDS, else 15)",
    )
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


async def serve(url: str, sagas: Sequence[Saga], poll_seconds: float, lease_seconds: float) -> None:
    """Run a worker of ``sagas`` on ``url`` until SIGTERM or SIGINT (or the worker fails)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    orchestrator = await SagaOrchestrator.from_url(url, sagas, lease_seconds=lease_seconds)
    try:
        worker = asyncio.create_task(orchestrator.run(poll_seconds=poll_seconds))
        stopped = asyncio.create_task(stop.wait())
        names = ", ".join(sorted({saga.name for saga in sagas}))
        logger.info("worker of %s running on %s", names, redacted(url))
        await asyncio.wait({worker, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (worker, stopped):
            task.cancel()
        await asyncio.gather(worker, stopped, return_exceptions=True)
        if not worker.cancelled():
            worker.result()  # the worker stopped on its own: raise why
    finally:
        await orchestrator.close()


def main(argv: Sequence[str]) -> None:
    """``sagakit worker --app ...`` (``argv`` without the word ``worker``)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        sagas = load_sagas(args.app)
        asyncio.run(serve(args.database_url, sagas, args.poll_seconds, args.lease_seconds))
    except (AppNotFound, StoreError, OSError) as exc:
        print(f"sagakit worker: {exc}", file=sys.stderr)
        sys.exit(2)
