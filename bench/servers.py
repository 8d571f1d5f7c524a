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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    """``sagakit participant kind`` on ``database_url``, without demo data."""
    return [
        sys.executable,
        *("-m", "sagakit.cli", "participant", kind, "--port", str(port)),
        *("--database-url", database_url, "--no-demo-data"),
    ]


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
def serving(
    command: Sequence[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Start ``command``, wait until ``GET /healthz`` answers 200, and stop it at the end."""
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
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, log)
        yield Server(url=url, process=process, log=log)
        if process.poll() is not None:
            raise ServerFailed(f"server exited with {process.returncode}; see {log}")
    finally:
        stop(process)


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    """Return once ``url``/healthz answers 200; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"server exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise ServerFailed(f"server not healthy after {timeout:.0f}s:\n{tail(log)}")


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
