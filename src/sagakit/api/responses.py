"""A JSON response rendered by orjson: faster than the standard library's encoder."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as StarletteJSONResponse


class JSONResponse(StarletteJSONResponse):
    """``application/json`` rendered with orjson."""

    def render(self, content: Any) -> bytes:  # Starlette's signature
        return orjson.dumps(content)
