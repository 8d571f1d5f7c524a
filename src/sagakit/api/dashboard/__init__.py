"""The dashboard: server-rendered pages over the saga store, signed in with the admin token.

- ``routes.py``: the pages, their live fragments, sign-in and the operator's actions.
- ``auth.py``: the session cookie and the same-origin check every action passes.
- ``views.py``: the HTML (no template engine: every value goes through ``escape``).
- ``timeline.py``: a saga's events turned into attempts, compensations and notes.
- ``assets.py``: the stylesheet and the small script (auto-refresh, confirmations).
"""

from sagakit.api.dashboard.routes import router

__all__ = ["router"]
