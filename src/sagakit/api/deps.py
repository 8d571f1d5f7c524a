"""Dependencies shared by the routers: the service, the settings, the admin check, ids."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from sagakit.api.access import admin
from sagakit.api.operated import SETTINGS_STATE
from sagakit.api.schemas import ID_PATTERN
from sagakit.settings import Settings
from sagakit.shop.checkout import CheckoutService

# Dependencies are ``async def``: FastAPI runs a plain ``def`` one in a thread pool, which
# costs a thread hop per request for what is an attribute read.


async def get_service(request: Request) -> CheckoutService:
    """The checkout service this app runs."""
    service: CheckoutService = request.app.state.service
    return service


async def get_settings(request: Request) -> Settings:
    """The settings this app was created with (an operator router's own, on its routes)."""
    settings: Settings | None = getattr(request.state, SETTINGS_STATE, None)
    if settings is None:
        settings = request.app.state.settings
    return settings


Service = Annotated[CheckoutService, Depends(get_service)]
AppSettings = Annotated[Settings, Depends(get_settings)]
#: For ``dependencies=[...]`` of a route only an admin may call.
AdminOnly = Depends(admin)


def id_path(what: str) -> object:
    """A path parameter that must be an id."""
    return Path(pattern=ID_PATTERN, description=f"the {what}'s id")


OrderId = Annotated[str, id_path("order")]
UserId = Annotated[str, id_path("user")]
ItemId = Annotated[str, id_path("item")]
SagaId = Annotated[str, id_path("saga")]
