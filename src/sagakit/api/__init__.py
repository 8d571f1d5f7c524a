"""The checkout service's HTTP API (the ``server`` extra)."""

from sagakit.extras import missing_extra

try:
    import fastapi  # noqa: F401
except ModuleNotFoundError as exc:
    missing_extra(exc, "sagakit.api (the checkout service)")
