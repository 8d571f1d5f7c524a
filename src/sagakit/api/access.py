"""Who may do what: the admin token, the viewer tokens, and the operator's dependencies.

The operator surface (every ``/sagas`` route, the dashboard and its actions) is closed to
strangers. ``Authorization: Bearer <SAGAKIT_ADMIN_TOKEN>`` may do everything; a token of
``SAGAKIT_VIEWER_TOKENS`` may read (the ``GET`` routes) and nothing else. Without a valid
token an operator route answers ``401``; a viewer on an admin route gets ``403``.

Tokens are compared in constant time: the presented token's SHA-256 digest is compared with
every configured token's digest, all of them, whichever matches.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sagakit.settings import Settings

logger = logging.getLogger("sagakit.auth")

#: A presented token longer than this is refused without being hashed.
MAX_TOKEN: Final = 4096


class Role(enum.Enum):
    """What a credential allows."""

    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: their role, and the name the saga history records for them."""

    role: Role
    actor: str

    @property
    def is_admin(self) -> bool:
        """Whether this principal may change sagas."""
        return self.role is Role.ADMIN


def digest(token: str) -> bytes:
    """A token's SHA-256 digest (what is compared, so every comparison has one length)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def viewer_tokens(settings: Settings) -> list[str]:
    """The viewer tokens configured (``SAGAKIT_VIEWER_TOKENS``, comma-separated)."""
    return [t.strip() for t in settings.viewer_tokens.split(",") if t.strip()]


def role_of(settings: Settings, presented: str | None) -> Role | None:
    """The role ``presented`` grants, or ``None``; every configured token is compared."""
    if not presented or len(presented) > MAX_TOKEN:
        return None
    seen = digest(presented)
    role: Role | None = None
    for token in viewer_tokens(settings):
        if hmac.compare_digest(seen, digest(token)):
            role = Role.VIEWER
    if settings.admin_token and hmac.compare_digest(seen, digest(settings.admin_token)):
        role = Role.ADMIN
    return role


def client_address(request: Request) -> str:
    """The client's address as the server saw it (behind a proxy: what it forwarded)."""
    return request.client.host if request.client else "unknown"


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="`SAGAKIT_ADMIN_TOKEN` (every route) or one of `SAGAKIT_VIEWER_TOKENS` (reads)",
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def unauthorized(message: str) -> HTTPException:
    """A ``401`` that asks for a bearer token."""
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def forbidden() -> HTTPException:
    """The ``403`` of a viewer on an admin route."""
    return HTTPException(status_code=403, detail="a viewer token may read but not act: admin only")


def principal_of_token(settings: Settings, token: str | None) -> Principal | None:
    """The principal of a bearer token, or ``None`` unless it is a configured one."""
    role = role_of(settings, token)
    return None if role is None else Principal(role, f"api:{role.value}")


async def operator(request: Request, credentials: Bearer) -> Principal:
    """A viewer or an admin, by bearer token; ``401`` otherwise."""
    settings: Settings = request.app.state.settings
    principal = principal_of_token(settings, credentials.credentials if credentials else None)
    if principal is None:
        raise unauthorized(
            "a token is required: send Authorization: Bearer <SAGAKIT_ADMIN_TOKEN> or a"
            " viewer token"
        )
    return principal


async def admin(principal: Annotated[Principal, Depends(operator)]) -> Principal:
    """An admin, by bearer token; ``401`` without a token, ``403`` for a viewer."""
    if not principal.is_admin:
        raise forbidden()
    return principal


Operator = Annotated[Principal, Depends(operator)]
Admin = Annotated[Principal, Depends(admin)]


def log_action(request: Request, principal: Principal, action: str, saga_id: str) -> None:
    """One line per operator action: who, from where, what, on which saga."""
    logger.info(
        "operator action %s on saga %s by %s",
        action,
        saga_id,
        principal.actor,
        extra={
            "action": action,
            "saga_id": saga_id,
            "actor": principal.actor,
            "client": client_address(request),
        },
    )
