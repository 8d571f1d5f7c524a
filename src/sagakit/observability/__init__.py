"""Metrics, logs and traces of sagas: listeners the orchestrator calls and never imports.

- ``instruments.py``: what a service wires into its orchestrator, in one bundle.
- ``metrics.py``: prometheus-client counters and histograms, and the ``/metrics`` text.
- ``multiproc.py``: prometheus-client's multiprocess mode, for ``serve --workers N``.
- ``logs.py``: structlog rendering of every log record, and a line per saga transition.
- ``tracing.py``: OpenTelemetry spans per saga and per step attempt (the ``otel`` extra).

Nothing is imported here, so that ``multiproc`` can run before prometheus-client loads.
"""
