"""The dashboard's HTML. No template engine: every value from a saga goes through ``escape``.

Each page has a ``#live`` region that the script swaps for a fresh copy every few seconds
while it says ``data-refresh``; the routes answer that copy alone when asked for it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html import escape
from urllib.parse import urlencode

import orjson

from sagakit.api.dashboard.assets import SCRIPT, STYLE
from sagakit.api.dashboard.parts import badge, current_error, holder, steps_table, when
from sagakit.api.dashboard.timeline import Kind, Row, timeline
from sagakit.records import SagaEvent, SagaInstance, SagaStatus
from sagakit.store.activity import StuckRule, stuck_reason
from sagakit.store.base import SagaPage

#: Where the dashboard is mounted for this request (its routes set it): ``/dashboard``, or
#: ``/ops/dashboard`` under an operator router mounted at ``/ops``.
BASE: ContextVar[str] = ContextVar("sagakit_dashboard_base", default="/dashboard")


def base() -> str:
    """The dashboard's path for this request, which every link and form starts with."""
    return BASE.get()


LIST_REFRESH_SECONDS = 5
#: How many newer pages the list remembers the way back to.
MAX_TRAIL = 50
SAGA_REFRESH_SECONDS = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ListFilters:
    """The list's filters, as the query string has them (empty strings mean "any")."""

    status: SagaStatus | None = None
    name: str = ""
    key: str = ""
    created_after: str = ""
    created_before: str = ""
    cursor: str | None = None
    #: The cursors of the newer pages seen on the way here, oldest first ("" is the first
    #: page): the way back, since a cursor only leads to older sagas.
    trail: tuple[str, ...] = ()

    def older(self, cursor: str) -> str:
        """The next (older) page's URL."""
        trail = (*self.trail, self.cursor or "")[-MAX_TRAIL:]
        return self.url(cursor=cursor, trail=trail)

    def newer(self) -> str | None:
        """The previous (newer) page's URL, or ``None`` on the first page."""
        if self.cursor is None:
            return None
        back = self.trail[-1] if self.trail else ""
        return self.url(cursor=back or None, trail=self.trail[:-1])

    def url(self, **changes: object) -> str:
        """The list's URL with these filters, ``changes`` applied."""
        current = replace(self, **changes)  # type: ignore[arg-type]
        query = {
            "status": current.status.value if current.status else "",
            "name": current.name,
            "key": current.key,
            "created_after": current.created_after,
            "created_before": current.created_before,
            "cursor": current.cursor or "",
            "trail": ",".join(current.trail) if current.cursor else "",
        }
        text = urlencode({k: v for k, v in query.items() if v})
        return f"{base()}?{text}" if text else base()


# -- small pieces ------------------------------------------------------------------------


def clock(at: float) -> str:
    """A timestamp's time of day to the millisecond (UTC)."""
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]


def took(seconds: float | None) -> str:
    """A duration as a person reads it: ``12 ms``, ``3.4 s``, ``2 min 5 s``, ``1 h 4 min``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


# -- the page around everything --------------------------------------------------------------


def page(title: str, body: str, *, nonce: str, signed_in: bool) -> str:
    """A whole page: header bar, ``body`` in ``main``, the stylesheet and the script."""
    nav = (
        f'<nav><a href="{base()}">Sagas</a>'
        f"<form method=post action={base()}/logout><button type=submit>Sign out</button>"
        "</form></nav>"
        if signed_in
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · sagakit</title>"
        f'<style nonce="{nonce}">{STYLE}</style></head><body>'
        f'<header class=bar><div class=wrap><a class=brand href="{base()}">sagakit</a>{nav}'
        "</div></header>"
        f"<main>{body}</main>"
        f'<script nonce="{nonce}">{SCRIPT}</script></body></html>'
    )


def sign_in(message: str = "") -> str:
    """The sign-in form, with ``message`` above it when the last try failed."""
    note = f'<p class="notice">{escape(message)}</p>' if message else ""
    return (
        "<div class=card><h1>sagakit dashboard</h1>"
        f"{note}<form method=post action={base()}/login>"
        "<label>Token <input type=password name=token autocomplete=current-password "
        "required autofocus></label><button type=submit>Sign in</button></form>"
        '<p class="muted">The admin token is <code>SAGAKIT_ADMIN_TOKEN</code> (or the one '
        "<code>sagakit serve</code> printed when it is unset); a viewer token of "
        "<code>SAGAKIT_VIEWER_TOKENS</code> shows the pages without their buttons.</p></div>"
    )


# -- the list ----------------------------------------------------------------------------------


def saga_list(
    sagas: SagaPage,
    counts: Mapping[SagaStatus, int],
    filters: ListFilters,
    notice: str,
    rule: StuckRule,
    *,
    can_act: bool = False,
) -> str:
    """The list page's body: the filter form, a bulk retry (for an admin), the live list."""
    note = f'<p class="notice">{escape(notice)}</p>' if notice else ""
    live = live_list(sagas, counts, filters, rule)
    failed = counts.get(SagaStatus.FAILED, 0)
    bulk = _bulk_retry(filters, failed) if can_act and failed else ""
    return f"<h1>Sagas</h1>{note}{_filter_form(filters)}{bulk}{live}"


def _bulk_retry(filters: ListFilters, failed: int) -> str:
    """A button that retries every failed saga these filters match, once confirmed."""
    hidden = "".join(
        f'<input type=hidden name={name} value="{escape(value)}">'
        for name, value in (
            ("name", filters.name),
            ("key", filters.key),
            ("created_after", filters.created_after),
            ("created_before", filters.created_before),
        )
        if value
    )
    sagas = "saga" if failed == 1 else "sagas"
    return (
        "<form class=bulk method=post action=/dashboard/retry-failed "
        f'data-confirm="Retry the compensation of {failed} failed {sagas} matching these'
        f' filters?">{hidden}<button type=submit>Retry all {failed} failed {sagas}</button>'
        "</form>"
    )


def _filter_form(filters: ListFilters) -> str:
    status = (
        f'<input type=hidden name=status value="{filters.status.value}">' if filters.status else ""
    )

    def field(label: str, name: str, value: str, kind: str = "text") -> str:
        return (
            f'<label>{label}<input type={kind} name={name} value="{escape(value)}" '
            "maxlength=64></label>"
        )

    moment = "datetime-local"
    active = filters.name or filters.key or filters.created_after or filters.created_before
    return (
        f"<details class=filters{' open' if active else ''}><summary>Filters</summary>"
        f"<form method=get action={base()}>"
        f"{status}{field('Saga name', 'name', filters.name)}"
        f"{field('Order (business key)', 'key', filters.key)}"
        f"{field('Started from (UTC)', 'created_after', filters.created_after, moment)}"
        f"{field('Started before (UTC)', 'created_before', filters.created_before, moment)}"
        '<div class=buttons><button type=submit>Filter</button><a class="button secondary" '
        f'href="{base()}">Clear</a></div></form></details>'
    )


def live_list(
    sagas: SagaPage, counts: Mapping[SagaStatus, int], filters: ListFilters, rule: StuckRule
) -> str:
    """The list's live region: counts by status (links that filter) and a page of sagas."""
    everything = filters.url(status=None, cursor=None)
    chips = [_chip("all", sum(counts.values()), everything, on=filters.status is None)]
    for status in SagaStatus:
        url = filters.url(status=status, cursor=None)
        count = counts.get(status, 0)
        alert = status is SagaStatus.FAILED and count > 0
        chips.append(_chip(status.value, count, url, on=filters.status is status, alert=alert))
    now = time.time()
    rows = "".join(_row(saga, stuck_reason(saga, now, rule)) for saga in sagas.sagas)
    table = (
        "<table class=sagas><thead><tr><th>Saga</th><th>Name</th><th>Order</th><th>Status</th>"
        "<th>Failed step · error</th><th>Started (UTC)</th><th>Took</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if rows
        else "<p class=empty>No saga matches.</p>"
    )
    more = _pager(filters, sagas.next_cursor)
    return (
        f'<div id=live data-refresh="{LIST_REFRESH_SECONDS}">'
        f'<nav class=counts aria-label="sagas by status">{"".join(chips)}</nav>'
        f"{table}{more}</div>"
    )


def _pager(filters: ListFilters, next_cursor: str | None) -> str:
    """Links to the first, the newer and the older page, those that lead somewhere."""
    links = []
    newer = filters.newer()
    if newer is not None:
        first = filters.url(cursor=None, trail=())
        links.append(f'<a href="{escape(first)}">« Newest</a>')
        links.append(f'<a href="{escape(newer)}">← Newer</a>')
    if next_cursor:
        links.append(f'<a href="{escape(filters.older(next_cursor))}">Older →</a>')
    return f"<p class=pager>{' '.join(links)}</p>" if links else ""


def _chip(label: str, count: int, url: str, *, on: bool, alert: bool = False) -> str:
    classes = " ".join(c for c in ("on" if on else "", "alert" if alert else "") if c)
    attribute = f' class="{classes}"' if classes else ""
    return f'<a{attribute} href="{escape(url)}">{label} <b>{count}</b></a>'


def _stuck_badge(reason: str | None) -> str:
    if reason is None:
        return ""
    return f' <span class="status stuck" title="{escape(reason)}">stuck</span>'


def _row(saga: SagaInstance, stuck: str | None) -> str:
    failure = (
        f"{escape(saga.failed_step)} · <span class=err>{escape(saga.error or '')}</span>"
        if saga.failed_step
        else f"<span class=err>{escape(saga.error or '')}</span>"
    )
    duration = "" if saga.status.is_active else took(saga.updated_at - saga.created_at)
    return (
        f'<tr><td class=mono><a href="{base()}/sagas/{saga.saga_id}">{saga.saga_id[:12]}</a>'
        f"</td><td>{escape(saga.name)}</td><td>{escape(saga.business_key or '')}</td>"
        f"<td>{badge(saga.status.value)}{_stuck_badge(stuck)}</td><td>{failure}</td>"
        f"<td class=num>{when(saga.created_at)}</td><td class=num>{duration}</td></tr>"
    )


# -- one saga ----------------------------------------------------------------------------------


def saga_page(
    saga: SagaInstance, events: Sequence[SagaEvent], *, can_act: bool, rule: StuckRule
) -> str:
    """A saga's page body: a link back, then its live region."""
    live = live_saga(saga, events, can_act=can_act, rule=rule)
    return f'<p><a href="{base()}">← All sagas</a></p>{live}'


def live_saga(
    saga: SagaInstance, events: Sequence[SagaEvent], *, can_act: bool, rule: StuckRule
) -> str:
    """A saga's live region: summary, error, actions (for an admin), steps, timeline, input."""
    refresh = SAGA_REFRESH_SECONDS if saga.status.is_active else 0
    ended = "" if saga.status.is_active else f"<span>took <b>{took(_span(saga))}</b></span>"
    resolved = saga.status is SagaStatus.COMPENSATED and any(
        e.type == "operator_resolved" for e in events
    )
    mark = badge("resolved by hand") if resolved else ""
    summary = (
        f"<p class=summary>{badge(saga.status.value)}{mark}<span><b>{escape(saga.name)}</b>"
        f" v{saga.version}</span><span>order <b>{escape(saga.business_key or '-')}</b></span>"
        f"<span>started <b>{when(saga.created_at)}</b> UTC</span>{ended}</p>"
    )
    label = (
        "Needs an operator"
        if saga.status is SagaStatus.FAILED
        else f"{saga.failed_step or 'a step'} failed"
    )
    shown = current_error(saga, events)
    error = (
        f'<div class="callout {saga.status.value}"><b>{escape(label)}</b>: {escape(shown)}</div>'
        if shown
        else ""
    )
    rows = "".join(_timeline_row(row) for row in timeline(events, active=saga.status.is_active))
    return (
        f'<div id=live data-refresh="{refresh}">'
        f"<h1>Saga <span class=id>{escape(saga.saga_id)}</span></h1>{summary}"
        f"{holder(saga, stuck_reason(saga, time.time(), rule))}{error}"
        f"{_actions(saga) if can_act else ''}"
        f"<h2>Steps</h2>{steps_table(saga.steps, resolved=resolved)}"
        f"<h2>Timeline</h2><ol class=timeline>{rows}</ol>"
        f"<details><summary>Input</summary><pre>{escape(_pretty(saga.input))}</pre></details>"
        "</div>"
    )


def _span(saga: SagaInstance) -> float:
    return max(0.0, saga.updated_at - saga.created_at)


def _pretty(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _actions(saga: SagaInstance) -> str:
    here = f"{base()}/sagas/{saga.saga_id}"
    forms: list[str] = []
    if saga.status is SagaStatus.FAILED:
        forms.append(
            f'<form method=post action="{here}/retry">'
            "<button type=submit>Retry compensation</button></form>"
        )
        forms.append(
            f'<form class=resolve method=post action="{here}/resolve">'
            "<label>Reason (kept in the history)<input name=reason required maxlength=500 "
            'placeholder="refunded by hand, ticket 1234"></label>'
            "<button type=submit class=secondary>Mark resolved</button></form>"
        )
    elif saga.status is SagaStatus.RUNNING and not saga.cancel_requested:
        forms.append(
            f'<form method=post action="{here}/cancel" data-confirm="Cancel this saga? '
            'The steps it has done will be compensated.">'
            "<button type=submit class=danger>Cancel saga</button></form>"
        )
    if saga.cancel_requested and saga.status.is_active:
        return "<div class='callout info'>Cancellation requested: compensating.</div>"
    return f"<div class=actions>{''.join(forms)}</div>" if forms else ""


def _timeline_row(row: Row) -> str:
    attempt = f" <small>attempt {row.attempt}</small>" if row.attempt else ""
    result = badge(row.result) if row.result else ""
    failed = row.kind is not Kind.NOTE and row.result not in ("succeeded", "compensated")
    detail_class = "detail bad" if failed else "detail"
    detail = f'<span class="{detail_class}">{escape(row.detail)}</span>' if row.detail else ""
    return (
        f'<li class="{row.kind.value}"><time>{clock(row.at)}</time>'
        f"<span class=what>{escape(row.title)}{attempt}</span>"
        f"<span class=took>{took(row.duration)}</span><span class=result>{result}</span>"
        f"{detail}</li>"
    )
