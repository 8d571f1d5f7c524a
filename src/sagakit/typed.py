"""Typed sagas: a pydantic model for a saga's input and for a step's result.

The store keeps JSON either way. ``Saga(..., input=Model)`` validates the input at ``start``
(before anything is stored) and keeps its JSON; ``@step(..., result=Model)`` keeps the JSON of
the model the action returns. The step's functions then get a context whose ``input`` and
``result`` are the models again. pydantic is imported only when a model is used.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from sagakit.errors import InvalidInput
from sagakit.records import JSON, JSONObject

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

#: Values stored as they are (no model to turn into JSON).
_PLAIN: Final = (dict, list, str, int, float, bool, type(None))


def describe(exc: ValidationError) -> str:
    """pydantic's errors on one line: ``total: Input should be a valid integer; ...``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())


def input_json(saga: str, model: type[BaseModel] | None, input: object) -> JSONObject:
    """The JSON to store for ``input`` (a dict or a model) of saga ``saga``.

    Raises :class:`~sagakit.errors.InvalidInput` when it does not fit ``model``.
    """
    if model is None:
        if isinstance(input, dict):
            return input
        return _json_object(input)
    from pydantic import ValidationError

    try:
        value = input if isinstance(input, model) else model.model_validate(input)
    except ValidationError as exc:
        raise InvalidInput(f"the input of saga {saga!r} is invalid: {describe(exc)}") from None
    return _json_object(value)


def result_json(model: type[BaseModel] | None, value: object) -> JSON:
    """The JSON to store for what a step's action returned (checked against ``model``)."""
    if model is not None and not isinstance(value, model):
        from pydantic import ValidationError

        try:
            value = model.model_validate(value)
        except ValidationError as exc:  # a failed attempt, retried and then compensated
            raise ValueError(f"the result does not fit {model.__name__}: {describe(exc)}") from None
    if isinstance(value, _PLAIN):
        return value
    dump = getattr(value, "model_dump", None)
    if dump is None:
        return value  # type: ignore[return-value]  # the engine refuses what is not JSON
    dumped: JSON = dump(mode="json")
    return dumped


def typed_context(
    ctx: Any, input_model: type[BaseModel] | None, result_model: type[BaseModel] | None
) -> Any:
    """``ctx`` (a ``StepContext``) with its input and its own result as models, where the
    step has models."""
    if input_model is None and result_model is None:
        return ctx
    return replace(
        ctx,
        input=ctx.input if input_model is None else input_model.model_validate(ctx.input),
        result=(
            ctx.result
            if result_model is None or ctx.result is None
            else result_model.model_validate(ctx.result)
        ),
    )


def _json_object(value: object) -> JSONObject:
    dump = getattr(value, "model_dump", None)
    if dump is None:
        raise InvalidInput(f"a saga's input is a JSON object or a pydantic model, not {value!r}")
    dumped: JSONObject = dump(mode="json")
    return dumped
