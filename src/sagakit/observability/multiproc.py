"""prometheus-client's multiprocess mode, turned on before prometheus-client is imported.

prometheus-client decides at import whether its values live in memory or in files under
``PROMETHEUS_MULTIPROC_DIR``; so this module imports nothing of it, and ``sagakit serve``
calls :func:`prepare_multiprocess_dir` before it starts the processes that will.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: The file names prometheus-client gives each process's values.
VALUE_FILES: Final = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")


def multiprocess_dir() -> str | None:
    """The directory of the multiprocess mode, if it is on."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir() -> Path | None:
    """Turn the multiprocess mode on for the processes this one starts from now on.

    A directory ``PROMETHEUS_MULTIPROC_DIR`` already names is kept, emptied of an earlier
    run's values (which would otherwise be added to this run's); else a fresh temporary
    directory is made, named in the environment, and returned for the caller to remove.
    """
    named = multiprocess_dir()
    if named is not None:
        directory = Path(named)
        directory.mkdir(parents=True, exist_ok=True)
        for pattern in VALUE_FILES:
            for stale in directory.glob(pattern):
                stale.unlink(missing_ok=True)
        return None
    created = Path(tempfile.mkdtemp(prefix="sagakit-metrics-"))
    os.environ[MULTIPROC_ENV] = str(created)
    return created
