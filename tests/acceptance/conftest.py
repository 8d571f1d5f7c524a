"""The acceptance tier: the installed ``sagakit`` command, run as a user runs it.

No fault hooks and no test launcher: the console script beside this Python, its flags and
``SAGAKIT_*`` variables, an SQLite file in a temporary directory, and HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import INSTALLED, Launcher


@pytest.fixture
def user(tmp_path: Path) -> Iterator[Launcher]:
    """A launcher of the installed command; every process it started is killed at the end."""
    launcher = Launcher(tmp_path, {"SAGAKIT_LOG_LEVEL": "warning"}, command=INSTALLED)
    try:
        yield launcher
    finally:
        launcher.close()
