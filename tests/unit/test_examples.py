"""The runnable examples do what the docs say they do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sagakit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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


def test_public_api_names_exactly_what_it_exports() -> None:
    """``sagakit.__all__`` lists every public name once, and each one resolves."""
    assert sorted(sagakit.__all__) == sorted(set(sagakit.__all__))
    for name in sagakit.__all__:
        assert getattr(sagakit, name) is not None
    assert {"Saga", "Step", "StepFailed", "SagaOrchestrator", "open_store"} <= set(sagakit.__all__)
