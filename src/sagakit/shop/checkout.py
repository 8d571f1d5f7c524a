"""The checkout service: checks an order out through its ``checkout`` saga."""

from __future__ import annotations

from dataclasses import dataclass

from sagakit.observability.instruments import Instruments
from sagakit.observability.metrics import SagaMetrics
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSONObject, SagaInstance, SagaStatus
from sagakit.shop.base import ShopStore
from sagakit.shop.errors import CheckoutBlocked, NotFound
from sagakit.shop.local_participants import CHECKOUT
from sagakit.shop.records import Order
from sagakit.store.base import SagaStore


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckoutOutcome:
    """Where an order's checkout saga stood when the caller stopped waiting."""

    order_id: str
    saga: SagaInstance


class CheckoutService:
    """Checks orders out through the ``checkout`` saga, one saga per order."""

    def __init__(
        self,
        store: SagaStore,
        shop: ShopStore,
        orchestrator: SagaOrchestrator,
        instruments: Instruments | None = None,
    ):
        self.store = store
        self.shop = shop
        self.orchestrator = orchestrator
        #: The metrics (and tracer) whose listeners ``orchestrator`` was given.
        self.instruments = instruments or Instruments(metrics=SagaMetrics())

    async def checkout(self, order_id: str, *, wait_seconds: float) -> CheckoutOutcome:
        """Start (or join) the order's checkout and wait up to ``wait_seconds`` for its end.

        Raises ``NotFound`` for an unknown order and ``CheckoutBlocked`` when the order's
        last saga failed and waits for an operator.
        """
        order = await self.shop.get_order(order_id)
        if order is None:
            raise NotFound(f"order {order_id!r} not found")
        started = await self.orchestrator.start(
            CHECKOUT, checkout_input(order), business_key=order_id
        )
        saga = started.instance
        if saga.status is SagaStatus.FAILED:
            raise CheckoutBlocked(order_id, saga.saga_id, saga.error)
        if saga.status.is_active and wait_seconds > 0:
            saga = await self.orchestrator.wait(saga.saga_id, wait_seconds)
        return CheckoutOutcome(order_id=order_id, saga=saga)


def checkout_input(order: Order) -> JSONObject:
    """The saga's input: a snapshot of the order as it is checked out."""
    return {
        "order_id": order.order_id,
        "user_id": order.user_id,
        "items": dict(order.items),
        "address": order.address,
        "total": order.total,
    }
