"""The ``sagakit`` command: ``serve`` (API and worker), ``worker`` (a worker alone), ``sagas``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Final

from pydantic import ValidationError

from sagakit import cli_sagas
from sagakit.server import bind, configure, limits_of
from sagakit.settings import Settings
from sagakit.startup import EXIT_SETTINGS, StartupFault, check_database, port_fault, redacted

#: The command's help: plain text (the module's docstring is reStructuredText).
HELP: Final = (
    "sagakit: a durable saga orchestrator and its checkout service. Commands: serve (the"
    " checkout API with a worker), worker (a worker alone), participant (one checkout"
    " participant as a service), sagas (list, show, retry, cancel, resolve sagas)."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sagakit",
        description=HELP,
        epilog="Exit codes: 0 done, 1 refused, 2 bad usage or settings, 3 a --timeout ran out.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of a fault at start"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the checkout API with a worker")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--database-url", help="sqlite:///path (default ./sagakit.db)")
    serve.add_argument("--workers", type=int, help="API processes (default 1)")
    serve.add_argument(
        "--no-demo-data", action="store_true", help="do not load the demo users, items, orders"
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        dest="header_timeout_seconds",
        help="seconds a client has to send a request's headers (default 10)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        dest="body_timeout_seconds",
        help="seconds a client has to send a request's body (default 30)",
    )
    serve.add_argument(
        "--keep-alive",
        type=float,
        dest="keep_alive_seconds",
        help="seconds an idle connection is kept open (default 5)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        help="open connections per process; past it the longest-idle is closed"
        " (default: the open-files limit less 128)",
    )
    worker = commands.add_parser("worker", help="run a worker alone: recovery and retries")
    worker.add_argument("--database-url", help="sqlite:///path (default ./sagakit.db)")
    worker.add_argument(
        "--app",
        help="module:attr: a worker of your own sagas instead of the checkout's"
        " (see `sagakit worker --app x --help`)",
    )
    participant = commands.add_parser(
        "participant", help="run one checkout participant as an HTTP service"
    )
    participant.add_argument("kind", choices=("payment", "inventory", "shipping"))
    participant.add_argument(
        "--database-url", required=True, help="its own sqlite:///path or postgresql:// URL"
    )
    participant.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    participant.add_argument(
        "--port", type=int, help="port (default payment 8001, inventory 8002, shipping 8003)"
    )
    participant.add_argument(
        "--no-demo-data", action="store_true", help="do not load the demo users or items"
    )
    participant.add_argument(
        "--transport",
        choices=("http", "amqp"),
        default="http",
        help="take commands over HTTP (default), or from RabbitMQ (SAGAKIT_AMQP_URL) too;"
        " either way it serves its HTTP API (users, items, /healthz) on --port",
    )
    cli_sagas.add_parser(commands)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Flags first, then ``SAGAKIT_*`` variables, then defaults."""
    flags = {
        name: value
        for name in (
            "host",
            "port",
            "database_url",
            "workers",
            "header_timeout_seconds",
            "body_timeout_seconds",
            "keep_alive_seconds",
            "max_connections",
        )
        if (value := getattr(args, name, None)) is not None
    }
    if getattr(args, "no_demo_data", False):
        flags["demo_data"] = False
    return Settings(**flags)


def _configure_logging(settings: Settings) -> None:
    """Structured logs on stderr: ``SAGAKIT_LOG_FORMAT`` json or console (a terminal's default)."""
    from sagakit.observability.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)


def serve(settings: Settings) -> None:
    """Run the API (and its worker) under uvicorn until SIGTERM or SIGINT.

    The port is bound first, then the database is opened (created, migrated): a start that
    fails on either leaves nothing behind. Only then does uvicorn start the app.
    """
    import uvicorn

    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        raise port_fault(settings, exc) from exc
    try:
        check_database(settings)
        if not settings.admin_token:
            token = secrets.token_urlsafe(18)
            settings = settings.model_copy(update={"admin_token": token})
            print(
                f"sagakit: SAGAKIT_ADMIN_TOKEN is not set; this run's admin token: {token}",
                file=sys.stderr,
            )
        _run_uvicorn(uvicorn, settings, sock)
    finally:
        sock.close()


def _run_uvicorn(uvicorn: ModuleType, settings: Settings, sock: socket.socket) -> None:
    common: dict[str, Any] = {
        "access_log": False,
        "log_level": settings.log_level,
        "log_config": None,  # uvicorn's lines go through our structlog handler
        "http": "sagakit.server:GuardedProtocol",
        "timeout_keep_alive": settings.keep_alive_seconds,
    }
    configure(limits_of(settings))
    if settings.workers == 1:
        from sagakit.service import create_app

        server = uvicorn.Server(uvicorn.Config(create_app(settings), **common))
        server.run(sockets=[sock])
        if not server.started:
            raise StartupFault("the service did not start: see the error logged above")
        return
    # Several processes: each builds its app from the environment (and its limits there).
    for name, value in settings.model_dump().items():
        if value is not None:
            os.environ[f"SAGAKIT_{name.upper()}"] = str(value)
    from uvicorn.supervisors import Multiprocess

    from sagakit.observability.multiproc import prepare_multiprocess_dir

    # Before the processes start, so that their metrics are added up at every scrape.
    metrics_dir = prepare_multiprocess_dir()
    try:
        config = uvicorn.Config(
            "sagakit.service:create_app_from_env",
            factory=True,
            workers=settings.workers,
            **common,
        )
        Multiprocess(config, sockets=[sock]).run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


async def run_worker(settings: Settings) -> None:
    """Run a worker alone until SIGTERM or SIGINT, then hand its sagas back."""
    from sagakit.service import running_service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_service(settings.model_copy(update={"demo_data": False})):
        logging.getLogger("sagakit.worker").info(
            "worker running on %s", redacted(settings.database_url)
        )
        await stop.wait()


def run_participant(kind: str, settings: Settings, port: int | None, transport: str) -> None:
    """Run one participant service under uvicorn until SIGTERM or SIGINT."""
    import uvicorn

    from sagakit.api.participants import DEFAULT_PORTS, KINDS, create_participant_app

    participant = next(k for k in KINDS if k == kind)
    uvicorn.run(
        create_participant_app(
            participant, settings, transport="amqp" if transport == "amqp" else "http"
        ),
        host=settings.host,
        port=port or DEFAULT_PORTS[participant],
        access_log=False,
        log_level=settings.log_level,
        log_config=None,
    )


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections for a long-running server.

    Every saga transition allocates short-lived records, and CPython's default threshold
    (700 allocations) runs a young-generation collection every few transitions. The
    modules and settings loaded at start-up are frozen out of every collection, and young
    collections run every 50,000 allocations; garbage (cycles included) is still collected
    as it is made. What it is worth: ``python -m bench.engine memory memory:// 4 1`` with
    and without ``BENCH_PYTHON_GC=1`` (here: 32 against 48 µs of CPU per transition on the
    memory store, 84 against 88 µs on SQLite).
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``sagakit`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "worker" and args.app:
        from sagakit import app_worker

        app_worker.main(list(sys.argv[1:] if argv is None else argv)[1:])
        return
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        parser.error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    _configure_logging(settings)
    tune_garbage_collector()
    try:
        if args.command == "serve":
            serve(settings)
        elif args.command == "participant":
            run_participant(args.kind, settings, args.port, args.transport)
        elif args.command == "sagas":
            sys.exit(cli_sagas.run(args, settings))
        else:
            check_database(settings)
            asyncio.run(run_worker(settings))
    except StartupFault as fault:
        if args.debug:
            traceback.print_exc()
        print(f"sagakit: {fault.message}", file=sys.stderr)
        sys.exit(EXIT_SETTINGS)


if __name__ == "__main__":
    main()
