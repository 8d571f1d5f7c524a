"""Faults at start: one line naming the setting and what to do, exit code 2, nothing left behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import free_port


def sagakit(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``sagakit`` command to its end (60 s at most)."""
    return subprocess.run(
        [sys.executable, "-m", "sagakit.cli", *args],
        cwd=cwd,
        env={**os.environ, "SAGAKIT_ADMIN_TOKEN": "t", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a refused start printed; it exited 2 and printed no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("sagakit: ")
    return lines[0]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://db/shop", "unsupported database URL scheme 'mysql'"),
        ("postgresql://postgres@127.0.0.1:notaport/x", "cannot open the database"),
        ("postgresql://postgres@127.0.0.1:1/x", "check that the server runs"),
        ("postgresql://postgres@127.0.0.1:5432/no_such_database_here", "does not exist"),
    ],
    ids=["scheme", "unreadable-port", "unreachable", "no-database"],
)
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_bad_database_url_prints_one_line_and_exits_2(
    tmp_path: Path, command: str, url: str, expected: str
) -> None:
    """The line names the setting and the cause; nothing is created."""
    port = ["--port", str(free_port())] if command == "serve" else []
    line = one_line(sagakit(command, *port, "--database-url", url, cwd=tmp_path))
    assert "--database-url / SAGAKIT_DATABASE_URL" in line
    assert expected in line
    assert list(tmp_path.iterdir()) == []


def test_an_unopenable_sqlite_path_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """A file in a directory that does not exist: the line says to create the directory."""
    url = f"sqlite:///{tmp_path / 'missing' / 'shop.db'}"
    line = one_line(
        sagakit("serve", "--port", str(free_port()), "--database-url", url, cwd=tmp_path)
    )
    assert "unable to open database file" in line
    assert "directory exists" in line


def test_a_port_in_use_prints_one_line_exits_2_and_leaves_no_database_file(tmp_path: Path) -> None:
    """The port is bound before the database is made: the failed start created nothing."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "shop.db"
        result = sagakit(
            "serve", "--port", str(port), "--database-url", f"sqlite:///{db}", cwd=tmp_path
        )

    line = one_line(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "SAGAKIT_PORT" in line
    assert list(tmp_path.iterdir()) == []


def test_debug_adds_the_traceback(tmp_path: Path) -> None:
    """``--debug`` prints the traceback above the same one line, and still exits 2."""
    result = sagakit("--debug", "worker", "--database-url", "mysql://db/shop", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("sagakit: cannot open the database")


def test_a_bad_setting_value_is_bad_usage_exit_2(tmp_path: Path) -> None:
    """An out-of-range setting is refused by the parser with exit 2, before anything starts."""
    result = sagakit("serve", "--port", "70000", cwd=tmp_path)
    assert result.returncode == 2
    assert "port" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--help"], ["sagas", "--help"], ["serve", "--help"]])
def test_help_is_plain_text_and_names_every_command(tmp_path: Path, args: list[str]) -> None:
    """No reStructuredText markup; the top help names all four commands and the exit codes."""
    result = sagakit(*args, cwd=tmp_path)
    assert result.returncode == 0
    assert "``" not in result.stdout
    if args == ["--help"]:
        for command in ("serve", "worker", "participant", "sagas"):
            assert command in result.stdout.split("positional arguments")[0]
        assert "3 a --timeout ran out" in result.stdout
