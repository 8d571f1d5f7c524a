"""The runnable examples do what the docs say they do."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
#: The examples the tests below run: every file of ``examples/`` must be one of them.
RUN_HERE = {
    "quickstart.py",
    "parcel.py",
    "fastapi_app.py",
    "testing_kit.py",
    "idempotent_participant.py",
}
#: Number words, for headings that count lines.
NUMBERS = {"fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "twenty": 20}


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """Run ``command`` in ``cwd``; the lines it printed (it must succeed)."""
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def python_block(markdown: Path) -> str:
    """The first fenced Python block of ``markdown``."""
    text = markdown.read_text()
    start = text.index("```python\n") + len("```python\n")
    return text[start : text.index("```", start)]


def test_quickstart_compensates_the_charge_when_shipping_refuses(tmp_path: Path) -> None:
    """The README's saga prints the refund of the charge, then ``compensated``."""
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.splitlines() == ["refund {'charged': 10}", "compensated"]
    assert (tmp_path / "demo.db").exists()


def test_importing_sagakit_loads_neither_fastapi_nor_the_testing_kit(tmp_path: Path) -> None:
    """``import sagakit`` stays the engine: the integrations load only when imported."""
    probe = "import sys, sagakit; print(sorted({'fastapi', 'sagakit.testing'} & set(sys.modules)))"

    assert run(sys.executable, "-c", probe, cwd=tmp_path) == ["[]"]


def test_readme_and_quickstart_show_the_code_that_runs() -> None:
    """The README's and the quickstart's saga are ``examples/quickstart.py``, word for word."""
    code = (EXAMPLES / "quickstart.py").read_text().split('"""\n\n', 1)[1]

    assert python_block(ROOT / "README.md") == code
    assert python_block(ROOT / "docs" / "quickstart.md") == code


def test_the_readme_saga_has_as_many_lines_as_its_heading_says() -> None:
    """ "A saga in N lines": N is the number of non-blank lines of the code below it."""
    readme = (ROOT / "README.md").read_text()
    word = readme.split("## A saga in ", 1)[1].split(" lines", 1)[0]
    lines = [line for line in python_block(ROOT / "README.md").splitlines() if line.strip()]

    assert NUMBERS[word] == len(lines)


def test_a_process_killed_mid_saga_leaves_it_to_the_next_one(tmp_path: Path) -> None:
    """examples/parcel.py: killed inside ``ship``, run again, ``ship`` reruns with its key."""
    died = subprocess.run(
        [sys.executable, str(EXAMPLES / "parcel.py"), "--die"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert died.returncode == -signal.SIGKILL
    reserve, ship = died.stdout.splitlines()
    saga_id = reserve.split()[1].split(":")[0]
    assert reserve == f"reserve {saga_id}:reserve"
    assert ship == f"ship {saga_id}:ship"

    assert run(sys.executable, EXAMPLES / "parcel.py", cwd=tmp_path) == [ship, "completed"]
    assert run(sys.executable, EXAMPLES / "parcel.py", cwd=tmp_path) == ["completed"]


def test_every_example_is_run_by_a_test() -> None:
    """No example in ``examples/`` goes untested."""
    assert {p.name for p in EXAMPLES.glob("*.py")} == RUN_HERE


def test_fastapi_example_runs_one_saga_per_order_and_refuses_changed_details(
    tmp_path: Path,
) -> None:
    """The app checks out, compensates a refusal, repeats the first order, refuses a change."""
    lines = run(sys.executable, EXAMPLES / "fastapi_app.py", cwd=tmp_path)

    assert lines[:4] == [
        "o1 {'status': 'completed', 'error': None}",
        "refunded {'charge_id': 'ch-o2', 'amount': 20}",
        "o2 {'status': 'compensated', 'error': 'Invalid shipping address'}",
        "o1 {'status': 'completed', 'error': None}",
    ]
    assert lines[4].startswith("o1 {'status': 'conflict', 'error': \"business key 'o1'")
    assert len(lines) == 5
    assert (tmp_path / "shop.db").exists()


def test_testing_kit_example_survives_every_crash_point(tmp_path: Path) -> None:
    """Each of the eight points is crashed at where a run reaches it, and every run ends well."""
    lines = run(sys.executable, EXAMPLES / "testing_kit.py", cwd=tmp_path)

    completed, compensated, summary = lines[:8], lines[8:16], lines[16:]
    assert [line.split(": ")[1] for line in completed] == [
        *["crashed, then completed"] * 4,
        *["not reached, then completed"] * 4,
    ]
    assert [line.split(": ", 1)[0] for line in compensated if "crashed" in line] == [
        "before_do:charge",
        "after_do:charge",
        "before_do:ship",
        "before_compensate:charge",
        "after_compensate:charge",
    ]
    assert all(line.endswith("then compensated") for line in compensated)
    assert summary == ["8 crash points, twice: every effect once, every undo once"]


def test_idempotent_participant_example_charges_and_refunds_once_across_crashes(
    tmp_path: Path,
) -> None:
    """Crashes after the charge and after the refund leave one charge, one refund, one tombstone."""
    lines = run(sys.executable, EXAMPLES / "idempotent_participant.py", cwd=tmp_path)

    assert lines == [
        "crash after the charge: completed, balance 80",
        "crash after the refund: compensated, balance 80",
        "a charge after its refund: voided, balance 80",
        "inbox: charged, refunded, voided",
    ]


@pytest.mark.wheel
@pytest.mark.timeout(180)
def test_wheel_in_a_fresh_venv_runs_the_quickstart_without_dev_extras(tmp_path: Path) -> None:
    """The built wheel, installed alone in a new virtual environment, runs the quickstart."""
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-q",
        "-w",
        dist,
        source,
        cwd=tmp_path,
        env=env,
    )
    (wheel,) = dist.glob("sagakit-*.whl")
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path, env=env)
    work.mkdir()

    printed = run(python, EXAMPLES / "quickstart.py", cwd=work, env=env)
    probe = (
        "import importlib.util as u, sagakit;"
        " print(sagakit.__file__, u.find_spec('pytest'), u.find_spec('fastapi'))"
    )
    (where,) = run(python, "-c", probe, cwd=work, env=env)
    module, pytest_spec, fastapi_spec = where.split()

    assert printed == ["refund {'charged': 10}", "compensated"]
    assert Path(module).is_relative_to(venv / "lib")  # the installed wheel, not src/
    assert pytest_spec == "None"  # no development tool came with it
    assert fastapi_spec == "None"  # nor the server extra: the core alone
