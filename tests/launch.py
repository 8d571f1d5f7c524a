"""``python -m tests.launch ARGS``: the ``sagakit`` command with the tests' fault hooks.

The process-level tests start every ``sagakit`` process this way. The hooks are installed
when this module is imported, so the processes ``serve --workers N`` spawns (which import
their parent's main module again) have them too.
"""

from __future__ import annotations

from sagakit.cli import main
from tests import faults

faults.install()

if __name__ == "__main__":
    main()
