"""Errors of the checkout domain.

The hierarchy::

    SagakitError
    └── ShopError
        ├── NotFound          no user, item or order has that id
        ├── AlreadyExists     the id is taken
        ├── InvalidOrder      the order names an unknown user or item, or nothing
        └── CheckoutBlocked   the order's last saga failed and waits for an operator
"""

from __future__ import annotations

from sagakit.errors import SagakitError


class ShopError(SagakitError):
    """A checkout-domain error."""


class NotFound(ShopError):
    """Nothing has that id."""


class AlreadyExists(ShopError):
    """That id is taken."""


class InvalidOrder(ShopError):
    """The order is not valid."""


class CheckoutBlocked(ShopError):
    """The order's last checkout failed to compensate and waits for an operator."""

    def __init__(self, order_id: str, saga_id: str, error: str | None) -> None:
        super().__init__(error or "the last checkout of this order failed")
        self.order_id = order_id
        self.saga_id = saga_id
