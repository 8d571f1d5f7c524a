"""The unit tier: the memory store only, and no I/O.

Every test here runs with the ways out closed: opening a network connection, starting a
process or opening an SQLite database fails the test, and the fixtures that would hand it
a file or another backend are replaced. A test that needs one of them belongs to another
tier (``tests/engine`` for the engine on every backend, ``tests/store`` for the stores,
``tests/api`` and the process-level tiers for the rest).
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from typing import NoReturn

import pytest

from sagakit.store import MemoryStore, SagaStore


def _refuse(what: str) -> NoReturn:
    raise AssertionError(f"unit tests do no I/O: {what} (move the test to another tier)")


@pytest.fixture(autouse=True)
def no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make network connections, subprocesses and SQLite databases fail."""
    monkeypatch.setattr(socket.socket, "connect", lambda *a: _refuse("a network connection"))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda *a: _refuse("a network connection"))
    monkeypatch.setattr(subprocess.Popen, "__init__", lambda *a, **k: _refuse("a subprocess"))
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _refuse("an SQLite database"))


@pytest.fixture
def tmp_path() -> NoReturn:
    """No files: a unit test that asks for a directory fails."""
    _refuse("a temporary directory")


@pytest.fixture
def store() -> SagaStore:
    """The memory store only (the other backends are tested in ``tests/engine``)."""
    return MemoryStore()
