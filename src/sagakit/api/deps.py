"""Dependencies shared by the routers: the service, the settings, the admin check."""

from __future__ import annotations

import secrets
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Path, Request

from sagakit.api.operated import SETTINGS_STATE
from sagakit.api.schemas import ID_PATTERN
from sagakit.settings import Settings
from sagakit.shop.checkout import CheckoutService

ADMIN_COOKIE: Final = "sagakit_admin"


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


def token_matches(settings: Settings, presented: str | None) -> bool:
    """Whether ``presented`` is the admin token (compared in constant time)."""
    expected = settings.admin_token
    if not expected or not presented:
        return False
    return secrets.compare_digest(presented.encode(), expected.encode())


async def require_admin(
    request: Request, settings: Annotated[Settings, Depends(get_settings)]
) -> None:
    """Refuse with 401 unless ``Authorization: Bearer <SAGAKIT_ADMIN_TOKEN>`` is sent."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token_matches(settings, presented.strip()):
        raise HTTPException(
            status_code=401,
            detail="admin token required: send Authorization: Bearer <SAGAKIT_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )


Service = Annotated[CheckoutService, Depends(get_service)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Admin = Depends(require_admin)


def id_path(what: str) -> object:
    """A path parameter that must be an id."""
    return Path(pattern=ID_PATTERN, description=f"the {what}'s id")


OrderId = Annotated[str, id_path("order")]
UserId = Annotated[str, id_path("user")]
ItemId = Annotated[str, id_path("item")]
SagaId = Annotated[str, id_path("saga")]
