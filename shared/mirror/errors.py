"""The structured error object every entry point returns for input it cannot use.

An error never carries the request's keys or values: a caller may put a card number in any
string, a key or a `role`, and the error is both returned and logged. So a field path is built
from names the code defines (model fields, their aliases, `Literal` tags) and list indexes only:
anything else in it came from the input and is replaced (`history.3.<extra>` for an unknown key,
`<key>` for a key of a free-form mapping). A message is pydantic's own for the error types whose
text is made of the schema's constraints; a bad discriminator names the tags it accepts, never
the tag it got; a validator's own text is kept only when it quotes nothing of its input; the
rest become `invalid value`.
"""

from __future__ import annotations

import typing
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core.core_schema import ErrorType

EXTRA = "<extra>"
"""An unknown key in a path."""
KEY = "<key>"
"""A key of a free-form mapping (e.g. `args`) or any other name the schema does not define."""

_PYDANTIC_MARKERS = frozenset({"[key]"})
"""Path steps pydantic itself adds (a mapping key that failed validation)."""

_ECHOING_TYPES = frozenset(
    {
        "get_attribute_error",
        "uuid_parsing",  # quotes the offending character
        "url_parsing",
        "url_syntax_violation",
        "no_such_attribute",
        "unexpected_keyword_argument",
        "unexpected_positional_argument",
    }
)
"""Error types whose pydantic message may quote the input: replaced outright. Our validators'
own messages (`value_error`, `assertion_error`) are kept when they quote nothing of the input
(most explain the rule: "retry_of names the earlier call, not this one")."""
_OWN_TEXT_TYPES = frozenset({"value_error", "assertion_error"})
_PYDANTIC_TYPES = frozenset(typing.get_args(ErrorType))
_SCAN_NODES = 2_000
"""How much of an error's input is searched for an echo (a validator's input may be a whole
event)."""


def _echoes(msg: str, value: Any) -> bool:
    """Whether `msg` holds any string (key or value, 3+ characters, not a schema name) or
    number of `value`."""
    stack = [value]
    seen = 0
    while stack and seen < _SCAN_NODES:
        item = stack.pop()
        seen += 1
        if isinstance(item, str | int | float) and not isinstance(item, bool):
            text = item if isinstance(item, str) else str(item)
            # a schema name ("retry_of") quoted by a rule's message is not an echo of input
            if len(text) >= 3 and text in msg and not is_known_name(text):
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return bool(stack)  # too large to search all of it: not trusted


def _literal_strings(annotation: Any, out: set[str], depth: int = 0) -> None:
    """Every string `Literal` value in an annotation (discriminator tags, event names)."""
    if depth > 8:
        return
    if typing.get_origin(annotation) is typing.Literal:
        out.update(a for a in typing.get_args(annotation) if isinstance(a, str))
        return
    for arg in typing.get_args(annotation):
        _literal_strings(arg, out, depth + 1)


_names_of: weakref.WeakKeyDictionary[type[BaseModel], frozenset[str]] = weakref.WeakKeyDictionary()


def _model_names(cls: type[BaseModel]) -> frozenset[str]:
    names = _names_of.get(cls)
    if names is None:
        found: set[str] = set()
        for name, info in getattr(cls, "__pydantic_fields__", {}).items():
            found.add(name)
            for alias in (info.alias, info.validation_alias):
                if isinstance(alias, str):
                    found.add(alias)
            _literal_strings(info.annotation, found)
        names = _names_of[cls] = frozenset(found)
    return names


def _models() -> set[type[BaseModel]]:
    stack: list[type[BaseModel]] = [BaseModel]
    seen: set[type[BaseModel]] = set()
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
    return seen


_known: set[str] = set()
_known_models = 0


def is_known_name(name: str) -> bool:
    """Whether `name` is defined by a loaded model (a field, an alias or a `Literal` value).
    Models defined after the last look are picked up on a miss."""
    global _known_models
    if name in _known:
        return True
    models = _models()
    if len(models) != _known_models:
        for cls in models:
            _known.update(_model_names(cls))
        _known_models = len(models)
    return name in _known


def safe_path(loc: Sequence[Any], error_type: str = "") -> list[str]:
    """`loc` with every step that is not a list index or a schema-defined name replaced."""
    out: list[str] = []
    last = len(loc) - 1
    for i, step in enumerate(loc):
        if isinstance(step, int) and not isinstance(step, bool):
            out.append(str(step))
        elif i == last and error_type == "extra_forbidden":
            out.append(EXTRA)
        elif isinstance(step, str) and (step in _PYDANTIC_MARKERS or is_known_name(step)):
            out.append(step)
        else:
            out.append(KEY)
    return out


def _quoted(text: object) -> str:
    return str(text) if isinstance(text, str) else ""


def safe_message(err: Mapping[str, Any]) -> str:
    """The message of one pydantic error without anything of the input in it."""
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", "invalid value"))
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        # ctx's discriminator and expected tags come from the schema; its `tag` is the input
        return (
            f"{_quoted(ctx.get('discriminator')) or 'the discriminator'} must be one of"
            f" {_quoted(ctx.get('expected_tags')) or 'the known tags'}"
        )
    if kind in _ECHOING_TYPES:
        return "invalid value"
    value = err.get("input")
    if kind in _OWN_TEXT_TYPES or kind not in _PYDANTIC_TYPES:
        # a validator's (or a custom error's) own text: kept only if it quotes no input
        return "invalid value" if _echoes(msg, value) else msg
    # pydantic's templates quote constraints only; defence in depth against a version that
    # quotes the value itself
    if isinstance(value, str) and len(value) >= 3 and value in msg:
        return "invalid value"
    return msg


def field_errors(errors: Iterable[Mapping[str, Any]], strip: int = 0) -> list[dict[str, str]]:
    """One `{field, message}` per pydantic error, echo-free; `strip` drops leading `loc` steps
    (FastAPI's `body`)."""
    out: list[dict[str, str]] = []
    for err in errors:
        kind = str(err.get("type", ""))
        loc = list(err.get("loc", ()))[strip:]
        field = ".".join(safe_path(loc, kind)) or "(event)"
        out.append({"field": field, "message": safe_message(err)})
    return out


def error_response(
    kind: str, message: str, fields: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if fields is not None:
        error["fields"] = fields
    return {"error": error}


def invalid_message(fields: Sequence[Mapping[str, str]]) -> str:
    """`invalid event: <the first five fields>`."""
    names = ", ".join(f["field"] for f in fields[:5])
    return f"invalid event: {names}"


def validation_error_response(e: ValidationError) -> dict[str, Any]:
    """Name every bad field by its dotted path ('tool_calls.0.id'), built from the schema's
    names only; never echo the input's keys or values, which may hold caller PII."""
    fields = field_errors(e.errors(include_url=False))
    return error_response("invalid_event", invalid_message(fields), fields)
