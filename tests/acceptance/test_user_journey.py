"""A user's first session: help, serve with the demo data, check out, look, stop."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.processes import INSTALLED, Launcher, free_port


def sagakit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``sagakit ARGS`` to its end, in ``cwd``."""
    return subprocess.run(
        [*INSTALLED, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_help_names_every_command(tmp_path: Path) -> None:
    """``sagakit --help`` lists serve, worker, participant and sagas, and exits 0."""
    done = sagakit("--help", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    for command in ("serve", "worker", "participant", "sagas"):
        assert command in done.stdout


def test_a_bad_flag_is_one_line_on_stderr_and_exit_code_2(tmp_path: Path) -> None:
    """``sagakit serve --workers 0`` refuses to start with a short message, no traceback."""
    done = sagakit("serve", "--workers", "0", cwd=tmp_path)

    assert done.returncode == 2
    assert "workers" in done.stderr
    assert "Traceback" not in done.stderr


async def test_serve_checks_out_the_demo_orders_and_the_cli_shows_their_sagas(
    user: Launcher, tmp_path: Path
) -> None:
    """The demo's order1 completes and order3 compensates; ``sagas`` lists and shows them."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    port = free_port()
    server = await user.launch_server(port, ["serve", "--port", str(port), "--database-url", url])
    async with server.client() as client:
        completed = await client.post("/checkout/order1")
        refused = await client.post("/checkout/order3")
    assert (completed.status_code, completed.json()["status"]) == (200, "completed")
    assert (refused.status_code, refused.json()["status"]) == (400, "compensated")

    # uvicorn re-raises the SIGTERM it handled once shut down: -SIGTERM is a clean stop too.
    assert await server.terminate(timeout=20.0) in (0, -signal.SIGTERM), server.output()
    assert "Traceback" not in server.output()

    listing = sagakit("sagas", "list", "--database-url", url, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "completed" in listing.stdout
    assert "compensated" in listing.stdout
    shown = sagakit(
        "sagas", "show", completed.json()["saga_id"], "--database-url", url, cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    for step in ("payment", "inventory", "shipping"):
        assert step in shown.stdout
