"""The HTTP layer alone: CPU per checkout request through the ASGI app, the saga stubbed out.

``python -m bench.asgi [--requests 20000] [--rounds 5]`` builds sagakit's app as ``sagakit
serve`` does (its middleware, routers, error handlers and logging, JSON lines to
``/dev/null``) around a checkout service whose ``checkout`` answers a completed saga at
once, and the baseline app (``bench/baseline_app.py``), and calls each with the same
``POST /checkout/{order_id}`` requests, in process (no sockets, no uvicorn), in interleaved
rounds. It prints the median CPU µs per request of each and their difference: what
sagakit's HTTP layer (routing, validation, request id, access log, metrics, the response)
costs on top of the baseline's FastAPI route. Nothing durable runs, so the figure is
steady on a noisy machine, unlike a whole-server benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Message

from sagakit.observability.instruments import Instruments
from sagakit.observability.logs import configure_logging
from sagakit.observability.metrics import SagaMetrics
from sagakit.records import SagaInstance, SagaStatus, new_id
from sagakit.settings import Settings
from sagakit.shop.checkout import CheckoutOutcome, CheckoutService


class StubService(CheckoutService):
    """A checkout service whose every checkout has already completed."""

    def __init__(self) -> None:
        self.instruments = Instruments(metrics=SagaMetrics())
        self.store = None  # type: ignore[assignment]

    async def checkout(self, order_id: str, *, wait_seconds: float) -> CheckoutOutcome:
        saga = SagaInstance(
            saga_id=new_id(),
            name="checkout",
            version=1,
            status=SagaStatus.COMPLETED,
            input={},
            steps=(),
        )
        return CheckoutOutcome(order_id=order_id, saga=saga)


def sagakit_app() -> ASGIApp:
    from sagakit.api.app import create_app

    @contextlib.asynccontextmanager
    async def running(settings: Settings) -> AsyncIterator[CheckoutService]:
        yield StubService()

    app = create_app(Settings(database_url="sqlite:///:memory:"), running)
    app.state.service = StubService()
    return app


def baseline_app() -> ASGIApp:
    os.environ.setdefault("BENCH_ORDERS", "20000")
    from bench.baseline_app import create_app

    return create_app()


async def call(app: ASGIApp, path: str) -> int:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"0")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def one_round(app: ASGIApp, paths: list[str]) -> float:
    started = time.process_time()
    for path in paths:
        if await call(app, path) >= 500:
            raise SystemExit(f"bench.asgi: {path} answered a 5xx")
    return (time.process_time() - started) / len(paths) * 1e6


async def main(requests: int, rounds: int) -> None:
    from bench import workload

    paths = [f"/checkout/{o.order_id}" for o in workload.orders(requests)]
    apps = {"baseline": baseline_app(), "sagakit": sagakit_app()}
    for app in apps.values():
        await one_round(app, paths[:500])  # warm-up
    results: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            results[name].append(await one_round(app, paths))
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        rounds_text = " / ".join(f"{v:.0f}" for v in results[name])
        print(f"{name:9} {value:7.1f} µs CPU per request (rounds: {rounds_text})")
    extra = medians["sagakit"] - medians["baseline"]
    print(f"sagakit's HTTP layer over the baseline's: {extra:.1f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with open(os.devnull, "w") as devnull:
        configure_logging("info", "json", stream=devnull)
        asyncio.run(main(args.requests, args.rounds))
