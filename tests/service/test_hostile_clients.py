"""Hostile clients against a real ``sagakit serve``: idle hoards, slow headers, trickled bodies."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import ADMIN_TOKEN, ServeProcess, free_port

#: The common default open-files limit the server is started with.
OPEN_FILES = 1024


@contextlib.contextmanager
def open_files_limit(soft: int) -> Iterator[None]:
    """Lower this process's open-files limit while a child is started (it inherits it)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@contextlib.asynccontextmanager
async def server(tmp_path: Path, *flags: str) -> AsyncIterator[ServeProcess]:
    """``sagakit serve`` with 1,024 open files at most, stopped at the end."""
    port = free_port()
    args = [
        "serve",
        "--port",
        str(port),
        "--database-url",
        f"sqlite:///{tmp_path / 's.db'}",
        *flags,
    ]
    env = {"SAGAKIT_ADMIN_TOKEN": ADMIN_TOKEN, "SAGAKIT_LOG_FORMAT": "json"}
    with open_files_limit(OPEN_FILES):
        process = ServeProcess(port, args, env, tmp_path / "serve.log")
    try:
        await process.wait_healthy()
        yield process
    finally:
        process.close()


async def closed_after(port: int, send: bytes, every: float, timeout: float) -> float:
    """Seconds until the server closes a connection that sends ``send`` every ``every`` s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    try:
        while time.monotonic() - start < timeout:
            with contextlib.suppress(ConnectionError):
                writer.write(send)
            try:
                if await asyncio.wait_for(reader.read(1024), every) == b"":
                    return time.monotonic() - start
            except TimeoutError:
                continue
            except ConnectionError:
                return time.monotonic() - start
        raise AssertionError(f"still open after {timeout} s")
    finally:
        writer.close()


async def test_1100_idle_connections_from_one_client_do_not_stop_another_clients_checkout(
    tmp_path: Path,
) -> None:
    """With 1,024 open files, 1,100 idle sockets are held open; a checkout still answers 200."""
    async with server(tmp_path) as serve:
        hoard: list[socket.socket] = []
        try:
            for _ in range(1100):
                sock = socket.socket()
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", serve.port))
                hoard.append(sock)
            await asyncio.sleep(1.0)  # the server accepts them all, closing the oldest idle ones
            async with httpx.AsyncClient(base_url=serve.url, timeout=10.0) as other:
                started = time.monotonic()
                answer = await other.post("/checkout/order1")
                took = time.monotonic() - started
        finally:
            for sock in hoard:
                sock.close()
        assert answer.status_code == 200, answer.text
        assert took < 5.0
        assert serve.alive
        assert "out of system resource" not in serve.output()


async def test_slow_headers_idle_connections_and_trickled_bodies_are_closed(
    tmp_path: Path,
) -> None:
    """Headers a byte at a time, silence, and a trickled body are each cut at their limit."""
    flags = ["--header-timeout", "1", "--body-timeout", "2", "--keep-alive", "1"]
    async with server(tmp_path, *flags) as serve:
        slow_headers, idle, trickled = await asyncio.gather(
            closed_after(serve.port, b"GET /healthz HTTP/1.1\r\nX-A: b\r\n"[:1], 0.2, 10),
            closed_after(serve.port, b"", 0.5, 10),
            closed_after(
                serve.port,
                b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                b"Content-Type: application/json\r\n\r\n ",
                0.2,
                10,
            ),
        )
        async with httpx.AsyncClient(base_url=serve.url) as other:
            assert (await other.get("/healthz")).status_code == 200
    assert slow_headers < 3
    assert idle < 3
    assert 1.5 < trickled < 5


@pytest.mark.parametrize("flag", ["--header-timeout", "--body-timeout", "--keep-alive"])
def test_a_timeout_flag_must_be_positive(flag: str) -> None:
    """Zero or a word is bad usage."""
    import subprocess
    import sys

    for value in ("0", "soon"):
        result = subprocess.run(
            [sys.executable, "-m", "sagakit.cli", "serve", flag, value],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
