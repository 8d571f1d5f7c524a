"""The ``sagakit`` console script: ``worker --app`` runs on the core; the rest needs ``server``.

``sagakit worker --app module:attr`` (a worker of an application's own sagas) needs only
``pip install sagakit``. The other commands (``serve``, ``participant``, ``sagas``, and
``worker`` for the checkout) are the service's, and say in one line which extra to install
when it is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sagakit.extras import extra_for


def _names_app(args: Sequence[str]) -> bool:
    return any(arg == "--app" or arg.startswith("--app=") for arg in args)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``sagakit`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["worker"] and _names_app(args[1:]):
        from sagakit.app_worker import main as app_worker

        app_worker(args[1:])
        return
    try:
        from sagakit.cli import main as service_cli
    except ModuleNotFoundError as exc:
        extra = extra_for(exc)
        if extra is None:
            raise
        print(
            f"sagakit: `sagakit {' '.join(args[:1]) or '--help'}` needs the {extra!r} extra"
            f" ({exc.name} is not installed): pip install 'sagakit[{extra}]'. On the core,"
            " `sagakit worker --app module:attr` runs a worker of your own sagas.",
            file=sys.stderr,
        )
        sys.exit(2)
    service_cli(args)
