"""Every Python block of the README and docs/ runs as written, or says it is a fragment.

A block fenced ```` ```python ```` is run as a script in an empty directory (and when the
text before the next block ends with "prints:", that ```` ```text ```` block is what it must
print); ```` ```python pytest ```` is saved as a test file and run by pytest, with none of
this project's pytest settings; ```` ```python fragment ```` (a method, a few lines of a
larger program) is only compiled.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a document."""

    where: str
    mode: str
    code: str
    prints: str | None


def _blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        fences = list(FENCE.finditer(text))
        for i, fence in enumerate(fences):
            info = fence["info"].split()
            if not info or info[0] not in ("py", "python"):
                continue
            code = textwrap.dedent(fence["body"])
            line = text.count("\n", 0, fence.start()) + 1
            prints = None
            if i + 1 < len(fences) and fences[i + 1]["info"].strip() == "text":
                between = text[fence.end() : fences[i + 1].start()].strip()
                if between.endswith("prints:"):
                    prints = textwrap.dedent(fences[i + 1]["body"])
            mode = info[1] if len(info) > 1 else "script"
            where = f"{doc.relative_to(ROOT)}:{line}"
            found.append(Block(where, mode if info[0] == "python" else "unmarked", code, prints))
    return found


BLOCKS = _blocks()


def test_the_docs_have_blocks_that_run() -> None:
    """The parser finds the README's saga and the docs' programs (it cannot find none)."""
    modes = [b.mode for b in BLOCKS]
    assert any(b.where.startswith("README.md:") and b.mode == "script" for b in BLOCKS)
    assert modes.count("script") >= 5
    assert modes.count("pytest") >= 1


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.where)
def test_a_python_block_runs_or_is_marked_a_fragment(block: Block, tmp_path: Path) -> None:
    """Scripts run (and print what the doc says), test files pass, fragments compile."""
    assert block.mode in ("script", "pytest", "fragment"), (
        f"{block.where}: fence Python as ```python (runs), ```python pytest or ```python fragment"
    )
    if block.mode == "fragment":
        compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return
    if block.mode == "pytest":
        (tmp_path / "pytest.ini").write_text("[pytest]\n")  # none of this project's settings
        (tmp_path / "test_doc.py").write_text(block.code)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_doc.py"]
    else:
        (tmp_path / "doc.py").write_text(block.code)
        command = [sys.executable, "doc.py"]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{block.where}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    if block.prints is not None:
        assert done.stdout == block.prints
