"""The OpenAPI examples look like what each field holds."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.support import json_of


async def test_each_kind_of_id_and_number_has_an_example_of_its_own(
    client: httpx.AsyncClient,
) -> None:
    """User, item and order ids show users, items and orders; stock is a count, not money."""
    schema: Any = json_of(await client.get("/openapi.json"))
    schemas = schema["components"]["schemas"]
    user, item, order = (schemas[n]["properties"] for n in ("UserIn", "ItemIn", "OrderIn"))

    assert user["user_id"]["examples"] == ["user1"]
    assert item["item_id"]["examples"] == ["item1"]
    assert order["user_id"]["examples"] == ["user1"]
    assert order["items"]["examples"] == [{"item1": 2, "item2": 1}]
    assert order["order_id"]["anyOf"][0]["examples"] == ["order42"]
    assert "minor units" in user["balance"]["description"]
    assert "minor units" in item["price"]["description"]
    assert "minor units" not in item["stock"]["description"]
    assert item["stock"]["description"] == "how many are in stock"
