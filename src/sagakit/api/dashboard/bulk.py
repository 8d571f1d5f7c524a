"""The dashboard's bulk action: retry every failed saga the list's filters match.

The list page offers it (with a confirmation naming how many) while its filters match failed
sagas. The form carries the filters; the server lists the failed sagas matching them again,
retries each (at most ``MAX_BULK``), and answers the list with how many were retried.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final
from urllib.parse import parse_qs, urlencode

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from sagakit.api.dashboard import views
from sagakit.api.dashboard.auth import check_operator
from sagakit.api.operated import Operations
from sagakit.api.schemas import FORBIDDEN_CHARACTERS
from sagakit.errors import SagakitError
from sagakit.records import SagaStatus

#: At most this many sagas are retried by one bulk action.
MAX_BULK: Final = 500
FIELDS: Final = ("name", "key", "created_after", "created_before")


def _instant(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def _fields(request: Request) -> dict[str, str]:
    body = parse_qs((await request.body()).decode("utf-8", "replace"))
    fields = {name: body.get(name, [""])[0].strip()[:64] for name in FIELDS}
    return {k: v for k, v in fields.items() if v and not FORBIDDEN_CHARACTERS.search(v)}


async def retry_failed(request: Request, service: Operations) -> Response:
    """Retry the compensation of every failed saga matching the form's filters."""
    who = await check_operator(request, "bulk retry", "failed sagas matching the filters")
    fields = await _fields(request)
    page = await service.store.list_sagas(
        status=SagaStatus.FAILED,
        name=fields.get("name"),
        business_key=fields.get("key"),
        created_after=_instant(fields.get("created_after", "")),
        created_before=_instant(fields.get("created_before", "")),
        limit=MAX_BULK,
    )
    retried = 0
    for saga in page.sagas:
        try:
            await service.orchestrator.retry(saga.saga_id, actor=who.actor)
        except SagakitError:
            continue  # retried meanwhile by someone else, or no longer failed
        retried += 1
    query = urlencode({**fields, "retried": retried})
    return RedirectResponse(f"{views.base()}?{query}", status_code=303)
