"""Fixtures of the core tier: what ``pip install sagakit`` alone can run.

``scripts/test-core`` runs this directory in a virtual environment with no extra installed
(``SAGAKIT_CORE_ONLY=1``, and ``--confcutdir`` keeps the conftest files above it out): the
store URLs are then memory and SQLite only. In the full suite PostgreSQL is added, through
the root conftest's ``postgres_url``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CORE_ONLY = os.environ.get("SAGAKIT_CORE_ONLY") == "1"
DURABLE = ["sqlite"] if CORE_ONLY else ["sqlite", "postgres"]
BACKENDS = ["memory", *DURABLE]


def _url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'sagas.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh store of each backend in turn."""
    return _url(request, request.param, tmp_path)


@pytest.fixture(params=DURABLE)
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh store that outlives a process (SQLite, and PostgreSQL)."""
    return _url(request, request.param, tmp_path)
