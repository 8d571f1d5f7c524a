"""The HTTP transport: checkout steps that call the participant services.

Each step POSTs its command with the step's idempotency key in an ``Idempotency-Key``
header. ``200`` is the result; ``409`` or ``422`` is a business refusal
(:class:`~sagakit.errors.StepFailed`: the participant applied nothing); any other status,
a timeout or a connection error raises :class:`ParticipantUnavailable`, which the step's
``RetryPolicy`` retries with the same key, and the participant's inbox makes the retry
apply the effect at most once. Compensations go the same way and never refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import httpx

from sagakit.errors import SagakitError, StepFailed
from sagakit.records import JSON, JSONObject
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, Step, StepContext
from sagakit.settings import Settings
from sagakit.shop.base import ShopStore
from sagakit.shop.errors import AlreadyExists
from sagakit.shop.local_participants import CHECKOUT
from sagakit.shop.records import Item, Ledger, Order, User

#: A participant that is down (killed, restarting) is tried for about ten seconds before
#: the step's outcome counts as unknown and the saga compensates.
HTTP_RETRY: Final = RetryPolicy(max_attempts=8, initial_delay=0.2, max_delay=2.0)
REFUSALS: Final = (409, 422)


class ParticipantUnavailable(SagakitError):
    """A participant did not answer, or answered neither a result nor a refusal."""


class HttpStep(Step):
    """A step whose action and compensation are commands to one participant service."""

    retry = HTTP_RETRY

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        name: str,
        action_url: str,
        compensation_url: str,
        body: Callable[[StepContext], JSONObject],
        timeout: float,
    ) -> None:
        self.name = name
        self.client = client
        self.action_url = action_url
        self.compensation_url = compensation_url
        self.body = body
        self.timeout = timeout

    async def do(self, ctx: StepContext) -> JSON:
        """Send the action; its answer is the step's result."""
        response = await self._post(self.action_url, ctx, self.body(ctx))
        if response.status_code in REFUSALS:
            raise StepFailed(_error_of(response))
        answer: JSON = response.json()
        return answer

    async def compensate(self, ctx: StepContext) -> None:
        """Send the compensation (a no-op, leaving a tombstone, if the action never came)."""
        response = await self._post(self.compensation_url, ctx, {})
        if response.status_code != 200:
            raise ParticipantUnavailable(f"{self.compensation_url} answered {response}")

    async def _post(self, url: str, ctx: StepContext, body: JSONObject) -> httpx.Response:
        headers = {"Idempotency-Key": ctx.idempotency_key}
        try:
            response = await self.client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ParticipantUnavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200 and response.status_code not in REFUSALS:
            raise ParticipantUnavailable(f"{url} answered {response.status_code}")
        return response


def _error_of(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    return str(error or f"refused ({response.status_code})")


def _charge(ctx: StepContext) -> JSONObject:
    return {"user_id": ctx.input["user_id"], "amount": ctx.input["total"]}


def _reserve(ctx: StepContext) -> JSONObject:
    return {"order_id": ctx.input["order_id"], "lines": ctx.input["items"]}


def _ship(ctx: StepContext) -> JSONObject:
    return {"order_id": ctx.input["order_id"], "address": ctx.input["address"]}


class HttpParticipants:
    """The three participant services, one HTTP client shared by their steps (close it)."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        self.client = httpx.AsyncClient(
            timeout=settings.participant_timeout_seconds, limits=limits, transport=transport
        )

    def steps(self) -> list[Step]:
        """Payment, inventory and shipping, as HTTP steps."""
        s, timeout = self.settings, self.settings.participant_timeout_seconds
        plan = (
            ("payment", s.payment_url, "charge", "refund", _charge),
            ("inventory", s.inventory_url, "reserve", "release", _reserve),
            ("shipping", s.shipping_url, "ship", "cancel", _ship),
        )
        return [
            HttpStep(
                self.client,
                name=name,
                action_url=f"{base.rstrip('/')}/{name}/{action}",
                compensation_url=f"{base.rstrip('/')}/{name}/{undo}",
                body=body,
                timeout=timeout,
            )
            for name, base, action, undo, body in plan
        ]

    def checkout_saga(self, *, compensation_retry: RetryPolicy | None = None) -> Saga:
        """The ``checkout`` saga over HTTP: the same name, steps and results as in-process."""
        steps = self.steps()
        if compensation_retry is not None:
            for step in steps:
                step.compensation_retry = compensation_retry
        return Saga(CHECKOUT, steps)

    def catalog(self, local: ShopStore) -> ShopStore:
        """``local`` with users and items read from (and created at) the participants."""
        return ParticipantCatalog(local, self)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


class ParticipantCatalog:
    """The checkout service's shop when its participants are services.

    Orders, and the catalog copy that prices them (user ids, item prices), stay in the
    checkout service's database; balances and stock live at the payment and inventory
    services, so ``get_user`` and ``get_item`` ask them, and ``create_user`` and
    ``create_item`` create the record there as well as in the copy.
    """

    def __init__(self, local: ShopStore, participants: HttpParticipants) -> None:
        self.local = local
        self.client = participants.client
        self.payment_url = participants.settings.payment_url.rstrip("/")
        self.inventory_url = participants.settings.inventory_url.rstrip("/")

    async def _get(self, url: str) -> JSONObject | None:
        try:
            response = await self.client.get(url)
        except httpx.HTTPError as exc:
            raise ParticipantUnavailable(f"{url}: {type(exc).__name__}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ParticipantUnavailable(f"{url} answered {response.status_code}")
        body: JSONObject = response.json()
        return body

    async def _create(self, url: str, body: JSONObject) -> None:
        try:
            response = await self.client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise ParticipantUnavailable(f"{url}: {type(exc).__name__}") from exc
        if response.status_code == 409:
            raise AlreadyExists(_error_of(response))
        if response.status_code != 201:
            raise ParticipantUnavailable(f"{url} answered {response.status_code}")

    async def get_user(self, user_id: str) -> User | None:
        body = await self._get(f"{self.payment_url}/users/{user_id}")
        return None if body is None else User(user_id=user_id, balance=_int(body["balance"]))

    async def create_user(self, user: User) -> User:
        await self._create(
            f"{self.payment_url}/users", {"user_id": user.user_id, "balance": user.balance}
        )
        await self.local.create_user(user)
        return user

    async def get_item(self, item_id: str) -> Item | None:
        body = await self._get(f"{self.inventory_url}/items/{item_id}")
        if body is None:
            return None
        return Item(item_id=item_id, stock=_int(body["stock"]), price=_int(body["price"]))

    async def create_item(self, item: Item) -> Item:
        await self._create(
            f"{self.inventory_url}/items",
            {"item_id": item.item_id, "stock": item.stock, "price": item.price},
        )
        await self.local.create_item(item)
        return item

    # Orders and the rest are the checkout service's own.

    async def create_order(
        self, order_id: str, user_id: str, items: dict[str, int], address: str
    ) -> Order:
        return await self.local.create_order(order_id, user_id, items, address)

    async def get_order(self, order_id: str) -> Order | None:
        return await self.local.get_order(order_id)

    async def charge(self, key: str, user_id: str, amount: int) -> str | None:
        return await self.local.charge(key, user_id, amount)

    async def refund(self, key: str) -> bool:
        return await self.local.refund(key)

    async def reserve(self, key: str, order_id: str, lines: dict[str, int]) -> str | None:
        return await self.local.reserve(key, order_id, lines)

    async def release(self, key: str) -> bool:
        return await self.local.release(key)

    async def ship(self, key: str, order_id: str, address: str) -> str | None:
        return await self.local.ship(key, order_id, address)

    async def cancel_shipment(self, key: str) -> bool:
        return await self.local.cancel_shipment(key)

    def local_charge(
        self, store: object, key: str, user_id: str, amount: int, result: JSON
    ) -> object | None:
        return None

    def local_reserve(
        self, store: object, key: str, order_id: str, lines: dict[str, int], result: JSON
    ) -> object | None:
        return None

    def local_ship(
        self, store: object, key: str, order_id: str, address: str, result: JSON
    ) -> object | None:
        return None

    async def load_demo_data(self) -> bool:
        return await self.local.load_demo_data()

    async def ledger(self) -> Ledger:
        return await self.local.ledger()


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise ParticipantUnavailable(f"expected an integer, got {value!r}")
    return value
