"""The core install: no web framework, at most eight distributions, extras named when missing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from tests.core.conftest import CORE_ONLY

#: What only the extras bring; ``import sagakit`` must load none of it.
EXTRA_MODULES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic_settings",
    "prometheus_client",
    "structlog",
    "rich",
    "httpx",
    "asyncpg",
    "aio_pika",
    "opentelemetry",
)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def _blocking(code: str) -> str:
    """``code`` run as if no extra were installed (each extra's modules made unimportable)."""
    return f"import sys\nfor m in {EXTRA_MODULES!r}: sys.modules[m] = None\n{code}"


def test_import_sagakit_loads_no_module_of_an_extra() -> None:
    """``import sagakit`` (and the testing kit and the worker) loads no web framework or driver."""
    done = _python(
        "import sys, sagakit, sagakit.testing, sagakit.lifecycle, sagakit.app_worker\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({EXTRA_MODULES!r})))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _closure(name: str) -> set[str]:
    """The distributions ``pip install name`` installs (no extras), ``name`` included."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        key = current.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(current) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def test_the_core_installs_at_most_eight_distributions() -> None:
    """``pip install sagakit`` brings at most eight distributions, sagakit included."""
    core = _closure("sagakit")
    assert "sagakit" in core
    assert not core & {"fastapi", "starlette", "uvicorn", "rich", "httpx", "pydantic-settings"}
    assert len(core) <= 8, sorted(core)


@pytest.mark.skipif(not CORE_ONLY, reason="checks the core-only environment of scripts/test-core")
def test_the_core_environment_holds_no_extra() -> None:
    """scripts/test-core's environment really lacks every extra (so the tests above prove it)."""
    assert [m for m in EXTRA_MODULES if importlib.util.find_spec(m) is not None] == []


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("sagakit.fastapi", "server"),
        ("sagakit.api", "server"),
        ("sagakit.settings", "server"),
        ("sagakit.transports.amqp", "amqp"),
    ],
)
def test_a_piece_of_an_extra_names_the_extra_to_install(module: str, extra: str) -> None:
    """Importing a server-side piece without its extra says which extra to install."""
    done = _python(_blocking(f"import {module}"))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sagakit.extras.MissingExtra:"), last
    assert f"pip install 'sagakit[{extra}]'" in last


def test_a_postgresql_url_without_the_driver_names_the_extra() -> None:
    """``open_store('postgresql://...')`` without asyncpg says to install sagakit[postgres]."""
    done = _python(
        _blocking(
            "import asyncio\nfrom sagakit import open_store\n"
            "asyncio.run(open_store('postgresql://127.0.0.1/none'))"
        )
    )
    assert done.returncode == 1
    assert "pip install 'sagakit[postgres]'" in done.stderr.strip().splitlines()[-1]


def test_sagakit_serve_without_the_server_extra_prints_one_line_and_exits_2() -> None:
    """The service's commands on the core: one line naming the extra, exit code 2."""
    done = _python(_blocking("from sagakit.entry import main\nmain(['serve'])"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install 'sagakit[server]'" in lines[0]
    assert "sagakit worker --app" in lines[0]
