"""HTTP request and response bodies (pydantic lives at this edge only)."""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, StrictInt

ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
MAX_AMOUNT: Final = 2**53 - 1
#: What no text field may hold: control characters (NUL among them) other than tab and
#: newline, and lone surrogates (no store can encode them). Refused as bad input (422) on
#: every store, before a database can refuse them as an error of its own.
FORBIDDEN_CHARACTERS: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def plain_text(value: str) -> str:
    """``value`` unless it holds a control character or a lone surrogate."""
    found = FORBIDDEN_CHARACTERS.search(value)
    if found is not None:
        raise ValueError(
            f"control character U+{ord(found.group()):04X} at {found.start()}: text may hold"
            " no control characters but tab and newline"
        )
    return value


def plain_json(value: JsonValue) -> JsonValue:
    """``value`` unless one of its strings or keys holds what :func:`plain_text` refuses."""
    if isinstance(value, str):
        plain_text(value)
    elif isinstance(value, list):
        for item in value:
            plain_json(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            plain_text(key)
            plain_json(item)
    return value


#: A string field that refuses control characters (see ``FORBIDDEN_CHARACTERS``).
Text = AfterValidator(plain_text)

#: Any id (users, items, orders, sagas' business keys); the kinds below show their own example.
Id = Annotated[str, Field(pattern=ID_PATTERN)]
UserId = Annotated[str, Field(pattern=ID_PATTERN, examples=["user1"])]
ItemId = Annotated[str, Field(pattern=ID_PATTERN, examples=["item1"])]
OrderId = Annotated[str, Field(pattern=ID_PATTERN, examples=["order42"])]
Amount = Annotated[
    StrictInt,
    Field(ge=0, le=MAX_AMOUNT, description="money, in minor units (cents)", examples=[2500]),
]
Stock = Annotated[
    StrictInt, Field(ge=0, le=MAX_AMOUNT, description="how many are in stock", examples=[12])
]
Quantity = Annotated[StrictInt, Field(ge=1, le=1_000_000, examples=[2])]


class Strict(BaseModel):
    """A request body that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    """Every error answer: a message, and for validation errors the details."""

    error: str
    detail: list[dict[str, JsonValue]] | None = None


class UserIn(Strict):
    """A new user."""

    user_id: UserId
    balance: Amount


class UserOut(BaseModel):
    """A user and their balance."""

    user_id: str
    balance: int


class ItemIn(Strict):
    """A new item."""

    item_id: ItemId
    stock: Stock
    price: Amount


class ItemOut(BaseModel):
    """An item, its stock and its price."""

    item_id: str
    stock: int
    price: int


class OrderIn(Strict):
    """A new order; its id is generated when absent."""

    order_id: OrderId | None = None
    user_id: UserId
    items: Annotated[
        dict[ItemId, Quantity],
        Field(min_length=1, max_length=1000, examples=[{"item1": 2, "item2": 1}]),
    ]
    address: Annotated[
        str, Field(max_length=1000, examples=["12 Some Street, Springfield"]), Text
    ] = ""


class OrderOut(BaseModel):
    """An order, its total and its status (``new``, ``checking_out``, ``completed``, ``failed``)."""

    order_id: str
    user_id: str
    items: dict[str, int]
    address: str
    total: int
    status: str


class CheckoutCompleted(BaseModel):
    """200: the checkout completed."""

    order_id: str
    saga_id: str
    status: str = "completed"
    message: str = "Order Completed"


class CheckoutCompensated(BaseModel):
    """400: a step refused; the steps before it were compensated."""

    order_id: str
    saga_id: str
    status: str = "compensated"
    error: str
    failed_step: str


class CheckoutPending(BaseModel):
    """202: the saga is still running (``?wait=false``, or the wait limit passed)."""

    order_id: str
    saga_id: str
    status: str


class CheckoutBlockedOut(BaseModel):
    """409: the order's last saga failed to compensate and waits for an operator."""

    order_id: str
    saga_id: str
    status: str = "failed"
    error: str


class StepOut(BaseModel):
    """One step of a saga."""

    name: str
    status: str
    attempts: int
    compensation_attempts: int
    error: str | None
    result: JsonValue
    started_at: str | None
    finished_at: str | None
    duration_ms: float | None = Field(
        description="finished_at - started_at in milliseconds; null until the step has both"
    )


class EventOut(BaseModel):
    """One entry of a saga's history."""

    at: str
    type: str
    step: str | None
    attempt: int | None
    detail: str | None


class SagaSummary(BaseModel):
    """A saga in a listing."""

    saga_id: str
    name: str
    status: str
    business_key: str | None
    error: str | None
    failed_step: str | None
    created_at: str
    updated_at: str
    owner: str | None = Field(
        description="the process driving the saga (host:pid:...), null when nobody holds it"
    )
    lease_expires_at: str | None = Field(
        description="when the owner's lease runs out unless renewed; then another process"
        " takes the saga over"
    )
    last_progress_at: str = Field(description="when the saga last recorded a transition")
    stuck: bool = Field(
        description="active, and its lease expired with no process taking it, or no progress"
        " for SAGAKIT_STUCK_AFTER_SECONDS"
    )
    stuck_reason: str | None = Field(description="why it is stuck, when it is")


class SagaOut(SagaSummary):
    """A saga with its input, steps and history."""

    input: dict[str, JsonValue]
    steps: list[StepOut]
    events: list[EventOut]


class SagaPageOut(BaseModel):
    """A page of sagas, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    sagas: list[SagaSummary]
    next_cursor: str | None
    counts: dict[str, int] = Field(
        description="how many sagas are in each status, over all sagas (not only this page)",
        examples=[{"running": 1, "compensating": 0, "completed": 7, "compensated": 2, "failed": 0}],
    )


class RetryOut(BaseModel):
    """202: the failed saga's compensation resumes."""

    saga_id: str
    status: str


class SignalOut(BaseModel):
    """202: the signal is stored; the saga waiting for it resumes."""

    saga_id: str
    signal: str
    #: False when this signal name had already been delivered (the first one counts).
    new: bool


class CancelOut(BaseModel):
    """202: the running saga will compensate what it did, from its next step on."""

    saga_id: str
    status: str
    note: str | None = Field(
        default=None,
        description="when another process holds the saga: who, and when its lease runs out"
        " (if that process is gone, the cancel takes effect once a worker takes it over)",
    )


class ResolveIn(Strict):
    """Why an operator marks a failed saga compensated by hand (kept in its history)."""

    reason: Annotated[
        str,
        Field(
            min_length=1,
            max_length=1000,
            pattern=r"\S",
            description="1 to 1000 characters, not only spaces",
            examples=["refunded by hand in the payment provider's console"],
        ),
        Text,
    ]
