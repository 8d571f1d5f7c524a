"""The checkout service's shop when its participants are services: a catalog over HTTP."""

from __future__ import annotations

import httpx

from sagakit.records import JSON, JSONObject
from sagakit.shop.base import ShopStore
from sagakit.shop.errors import AlreadyExists
from sagakit.shop.records import Item, Ledger, Order, User
from sagakit.transports.http import ParticipantUnavailable, error_of


class ParticipantCatalog:
    """The checkout service's shop when its participants are services.

    Orders, and the catalog copy that prices them (user ids, item prices), stay in the
    checkout service's database; balances and stock live at the payment and inventory
    services, so ``get_user`` and ``get_item`` ask them, and ``create_user`` and
    ``create_item`` create the record there as well as in the copy.
    """

    def __init__(
        self, local: ShopStore, client: httpx.AsyncClient, *, payment_url: str, inventory_url: str
    ) -> None:
        self.local = local
        self.client = client
        self.payment_url = payment_url.rstrip("/")
        self.inventory_url = inventory_url.rstrip("/")

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
            raise AlreadyExists(error_of(response))
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

    def local_refund(self, store: object, key: str) -> object | None:
        return None

    def local_release(self, store: object, key: str) -> object | None:
        return None

    def local_cancel_shipment(self, store: object, key: str) -> object | None:
        return None

    async def load_demo_data(self) -> bool:
        return await self.local.load_demo_data()

    async def ledger(self) -> Ledger:
        return await self.local.ledger()


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise ParticipantUnavailable(f"expected an integer, got {value!r}")
    return value
