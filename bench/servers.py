"""The servers under test, each a subprocess on a free port, always stopped on the way out.

A server runs in its own session (process group), so that stopping it reaches uvicorn's
worker processes too: SIGTERM to the server first (a graceful stop), then SIGKILL to its
group if it has not stopped within the grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 15.0


class ServerFailed(RuntimeError):
    """A server did not come up, or died while it was measured."""


@dataclass(frozen=True, slots=True)
class Server:
    """A running server: where to send requests, and the process to stop."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sagakit_command(port: int, database_url: str, processes: int) -> list[str]:
    """``sagakit serve`` with default settings, on ``database_url``, without demo data."""
    return [
        sys.executable,
        *("-m", "sagakit.cli", "serve", "--port", str(port)),
        *("--database-url", database_url, "--workers", str(processes), "--no-demo-data"),
    ]


def participant_command(kind: str, port: int, database_url: str) -> list[str]:
    """``sagakit participant kind`` (HTTP) on ``database_url``, without demo data."""
    return [
        sys.executable,
        *("-m", "sagakit.cli", "participant", kind, "--port", str(port)),
        *("--database-url", database_url, "--no-demo-data"),
    ]


def amqp_participant_command(kind: str, port: int, database_url: str) -> list[str]:
    """``sagakit participant kind --transport amqp`` on ``database_url``, without demo data
    (its HTTP API, for the catalog, on ``port``)."""
    return [*participant_command(kind, port, database_url), "--transport", "amqp"]


def baseline_command(port: int, processes: int) -> list[str]:
    """The in-memory baseline under uvicorn, with uvicorn's defaults as ``sagakit serve``."""
    return [
        sys.executable,
        *("-m", "uvicorn", "--factory", "bench.baseline_app:create_app"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(processes)),
        *("--no-access-log", "--log-level", "warning"),
    ]


def clean_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without ``SAGAKIT_*`` settings (so defaults apply)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAKIT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | extra


@contextlib.contextmanager
def running(
    command: Sequence[str],
    log: Path,
    ready: Callable[[], bool],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command``, wait until ``ready()`` says so, and stop it at the end.

    For a process that answers no HTTP (an AMQP participant): ``ready`` asks whoever can
    tell (RabbitMQ, for a queue's consumers).
    """
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=clean_environment(env or {}),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(ready, process, log, timeout)
        yield process
        if process.poll() is not None:
            raise ServerFailed(f"process exited with {process.returncode}; see {log}")
    finally:
        stop(process)


@contextlib.contextmanager
def serving(
    command: Sequence[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Start ``command``, wait until ``GET /healthz`` answers 200, and stop it at the end."""
    url = f"http://127.0.0.1:{port}"
    with running(command, log, partial(healthy, url), env=env) as process:
        yield Server(url=url, process=process, log=log)


def healthy(url: str) -> bool:
    """Whether ``url``/healthz answers 200 right now."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    """Return once ``ready()``; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"process exited with {process.returncode}:\n{tail(log)}")
        if ready():
            return
        time.sleep(0.1)
    raise ServerFailed(f"process not ready after {timeout:.0f}s:\n{tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to the server's whole process group after the grace period."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_GRACE_SECONDS)
    # uvicorn's workers share the server's process group; none may outlive it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def tail(log: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a server's log."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
