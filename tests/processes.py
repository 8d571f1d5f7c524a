"""Real ``sagakit`` processes for the tests that start the CLI, and what they share.

Each process runs the CLI with the fault hooks of ``tests/faults.py``
(``python -m tests.launch``) in a session of its own, so that a signal reaches the whole
tree (``serve --workers N`` is a supervisor and N children) and teardown leaves nothing
behind. Its output goes to a file, read back for failure messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Final, TypeVar

import httpx

ADMIN_TOKEN: Final = "recovery-admin-token"
ADMIN_HEADERS: Final = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STARTUP_SECONDS: Final = 20.0
ACTIVE: Final = ("running", "compensating")
#: Long enough that a checkout under load answers its outcome rather than 202.
PATIENT: Final = {"SAGAKIT_CHECKOUT_WAIT_SECONDS": "60"}

T = TypeVar("T")

#: The ``sagakit`` command with the fault hooks of ``tests/faults.py`` (most tiers).
WITH_HOOKS: Final = (sys.executable, "-m", "tests.launch")
#: The ``sagakit`` command as installed (the console script beside this Python), as a user
#: runs it (the acceptance tier).
INSTALLED: Final = (str(Path(sys.executable).with_name("sagakit")),)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, every: float = 0.05
) -> T:
    """The first answer of ``check`` that is not ``None``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (answer := await check()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(every)
    return answer


class SagakitProcess:
    """One ``sagakit`` command in a process group of its own, its output in a file."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        *,
        command: Sequence[str] = WITH_HOOKS,
    ) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.log = log
        self.command = list(command)
        self._output: IO[bytes] = log.open("ab")
        self.popen = subprocess.Popen(
            [*command, *args],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=self._output,
            # Its own process group, so that `serve --workers N` children die with it.
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The process id (also its process group's id)."""
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def output(self) -> str:
        """What the process wrote so far (for failure messages)."""
        return self.log.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process and every child it started."""
        if self.alive:
            os.killpg(self.pid, sig)

    async def wait(self, timeout: float) -> int:
        """The exit code once the process has ended; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (code := self.popen.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"sagakit {self.args[0]} still running after {timeout}s:\n{self.output()}"
                )
            await asyncio.sleep(0.02)
        return code

    async def wait_logged(self, text: str, timeout: float = STARTUP_SECONDS) -> None:
        """Return once the process has written ``text``; fail if it dies first."""

        async def logged() -> bool | None:
            if text in self.output():
                return True
            assert self.alive, f"{self.args[0]} exited:\n{self.output()}"
            return None

        await eventually(logged, timeout=timeout, what=f"{self.args[0]} logs {text!r}")

    def _kill_group(self) -> None:
        # The group outlives its leader while children live; the id is not reused until then.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    async def kill(self) -> float:
        """SIGKILL the process group and reap it; the time (``time.time()``) of the kill."""
        killed_at = time.time()
        self._kill_group()
        await self.wait(10.0)
        return killed_at

    async def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM the process and wait up to ``timeout`` seconds for it to exit."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    def close(self) -> None:
        """Kill the process group (whatever state it is in), reap it, close its log."""
        self._kill_group()
        try:
            self.popen.wait(10.0)
        finally:
            self._output.close()


class ServeProcess(SagakitProcess):
    """``sagakit serve`` (or a participant) on a port of its own, with an HTTP client factory."""

    def __init__(
        self,
        port: int,
        args: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        *,
        command: Sequence[str] = WITH_HOOKS,
    ) -> None:
        super().__init__(args, env, log, command=command)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def client(self, timeout: float = 60.0) -> httpx.AsyncClient:
        """A client for this server with room for 200 requests at once (close it)."""
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        return httpx.AsyncClient(base_url=self.url, timeout=timeout, limits=limits)

    async def wait_healthy(self, timeout: float = STARTUP_SECONDS) -> None:
        """Return once ``GET /healthz`` answers 200; fail if the process dies first."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=1.0) as client:
            while True:
                if not self.alive:
                    raise AssertionError(f"sagakit serve exited at startup:\n{self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"sagakit serve not healthy in {timeout}s")
                await asyncio.sleep(0.05)


class Launcher:
    """Starts ``sagakit`` processes for one test, each logging to a file in ``tmp``.

    What every process-level tier shares: the command (with the tests' fault hooks, or as
    installed), the environment every process of the test gets, a log file per process,
    and ``close``, which kills and reaps every process started.
    """

    def __init__(
        self, tmp: Path, env: Mapping[str, str], *, command: Sequence[str] = WITH_HOOKS
    ) -> None:
        self.tmp = tmp
        self.base_env = dict(env)
        self.command = tuple(command)
        self.processes: list[SagakitProcess] = []

    def log_file(self, kind: str) -> Path:
        """The next process's log file, numbered in start order."""
        return self.tmp / f"{len(self.processes):02d}-{kind}.log"

    def launch(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> SagakitProcess:
        """Start ``sagakit ARGS`` (the base environment, then ``env``)."""
        process = SagakitProcess(
            args, {**self.base_env, **(env or {})}, self.log_file(args[0]), command=self.command
        )
        self.processes.append(process)
        return process

    async def launch_server(
        self,
        port: int,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        ready: str | None = None,
    ) -> ServeProcess:
        """Start ``sagakit ARGS`` listening on ``port``; return once ``/healthz`` answers
        (and, with ``ready``, once the process logged it)."""
        kind = args[1] if args[0] == "participant" else args[0]
        process = ServeProcess(
            port,
            args,
            {**self.base_env, **(env or {})},
            self.log_file(kind),
            command=self.command,
        )
        self.processes.append(process)
        if ready is not None:
            await process.wait_logged(ready)
        await process.wait_healthy()
        return process

    async def restart(self, process: SagakitProcess, *, ready: str | None = None) -> SagakitProcess:
        """Start a dead process again with its arguments and environment (a server: its
        port, once healthy); with ``ready``, return once the new one logged it."""
        assert not process.alive, "restart a process only once it is dead"
        if isinstance(process, ServeProcess):
            return await self.launch_server(process.port, process.args, process.env, ready=ready)
        fresh = self.launch(process.args, process.env)
        if ready is not None:
            await fresh.wait_logged(ready)
        return fresh

    def close(self) -> None:
        """Kill and reap every process started."""
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.close()


# -- scenarios over HTTP -------------------------------------------------------------------


async def create_buyers(client: httpx.AsyncClient, buyers: int, balance: int) -> list[str]:
    """``buyers`` users with ``balance`` each, and an order of one ``hot`` item per user."""
    item = {"item_id": "hot", "stock": 10, "price": 10}
    assert (await client.post("/items", json=item, headers=ADMIN_HEADERS)).status_code == 201
    users = [f"buyer-{i:03d}" for i in range(buyers)]
    created = await asyncio.gather(
        *(
            client.post("/users", json={"user_id": u, "balance": balance}, headers=ADMIN_HEADERS)
            for u in users
        )
    )
    assert {r.status_code for r in created} == {201}
    orders = await asyncio.gather(
        *(
            client.post(
                "/orders",
                json={"order_id": f"order-{u}", "user_id": u, "items": {"hot": 1}, "address": "x"},
            )
            for u in users
        )
    )
    assert {r.status_code for r in orders} == {201}
    return users
