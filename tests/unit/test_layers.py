"""The layers drawn in docs/architecture.md are the layers import-linter enforces."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def contract_layers() -> list[str]:
    """The layers of the ``layers`` contract in pyproject.toml, top first."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    layers: list[str] = next(c["layers"] for c in contracts if c["id"] == "layers")
    return layers


def drawn_layers() -> list[str]:
    """The layers of the drawing between ``<!-- layers -->`` marks, top first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    drawing = text.split("<!-- layers -->", 1)[1].split("<!-- /layers -->", 1)[0]
    names = []
    for line in drawing.splitlines():
        cell = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        if cell and cell[0].isalpha():
            names.append(cell)
    return names


def test_the_drawing_lists_the_contracts_layers_in_order() -> None:
    """Each drawn layer, top to bottom, is the contract's (same modules, same separators)."""
    assert drawn_layers() == contract_layers()


def test_every_top_level_module_has_a_layer() -> None:
    """The contract names each module and package of sagakit once (it is exhaustive)."""
    package = ROOT / "src" / "sagakit"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    named = [m for layer in contract_layers() for m in re.split(r"\s*[|:]\s*", layer)]
    assert sorted(named) == sorted(modules)
