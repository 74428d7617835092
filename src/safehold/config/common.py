"""Shared pieces of the configuration models: the ``_Model`` base and the validation helpers.

Concepts: ``_Model`` (every model forbids unknown keys and is frozen, so the
JSON schema and the reference generated from the models are complete); error
helpers that build pydantic errors whose message is final as written
(``_invalid``, ``_problem``, ``_reraise``, ``_suggestion``); ``_check_kind``
for the ``type`` of a tagged mapping (sources, health checks); and the
validation context.

Validation that depends on where the file lives (relative paths) or on the
environment (``SAFEHOLD_STATE_DIR``) reads the pydantic validation context:
``{"base_dir": Path, "environ": Mapping[str, str], "path": Path}``. Without a
context, relative paths are resolved against the current directory and the
process environment is used. ``safehold.config.loader`` supplies the context
and turns validation errors into one ``ConfigError`` with file:line for each.

The names keep their leading underscore: they are shared by the modules of
``safehold.config`` only and are not part of its interface.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --- error helpers ----------------------------------------------------------


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is complete as written (no templating)."""
    return PydanticCustomError("config", message)


def _problem(loc: tuple[str | int, ...], message: str, value: object) -> InitErrorDetails:
    return InitErrorDetails(type=_invalid(message), loc=loc, input=value)


def _reraise(title: str, problems: list[InitErrorDetails], caught: ValidationError | None = None) -> NoReturn:
    """Raise one ValidationError holding ``caught``'s errors followed by ``problems``.

    pydantic prefixes the locations of a ValidationError raised inside a
    validator with the location being validated, so ``loc`` stays relative.
    """
    details: list[InitErrorDetails] = []
    for error in caught.errors() if caught is not None else []:
        message = error["msg"]
        context = error.get("ctx")
        # Keep the context only when the finished message cannot be re-templated by it.
        if context and any("{" + key + "}" in message for key in context):
            context = None
        details.append(
            InitErrorDetails(
                type=PydanticCustomError(error["type"], message, context),
                loc=error["loc"],
                input=error["input"],
            )
        )
    raise ValidationError.from_exception_data(title, [*details, *problems])


def _suggestion(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


# --- context helpers --------------------------------------------------------


def _context(info: ValidationInfo) -> Mapping[str, Any]:
    return info.context if isinstance(info.context, Mapping) else {}


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    environ = _context(info).get("environ")
    return environ if environ is not None else os.environ


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Absolute form of ``value``; relative paths are relative to the config file's directory.

    Symlinks are deliberately not resolved: ``/dev/vg0/db`` must stay the LVM
    name, not become ``/dev/dm-3`` which may change across boots.
    """
    base = _context(info).get("base_dir") or Path.cwd()
    expanded = os.path.expanduser(value)
    return os.path.normpath(os.path.join(os.fspath(base), expanded))

def _check_kind(value: object, *, what: str, supported: tuple[str, ...], planned: tuple[str, ...] = ()) -> object:
    """Check a tagged mapping's ``type`` with a message better than pydantic's union error."""
    if not isinstance(value, dict):
        return value  # the model's own validation reports "expected a mapping"
    expected = ", ".join(supported)
    if "type" not in value:
        raise ValidationError.from_exception_data(
            what,
            [_problem(("type",), f"missing required key 'type'; expected one of: {expected}", value)],
        )
    kind = value["type"]
    if isinstance(kind, str) and kind in supported:
        return value
    if isinstance(kind, str) and kind in planned:
        message = (
            f"{what} type {kind!r} is not supported by this release of safehold; this release supports: {expected}"
        )
    else:
        message = f"{kind!r} is not valid; expected one of: {expected}"
        close = _suggestion(kind, (*supported, *planned)) if isinstance(kind, str) else None
        if close in supported:
            message += f"; did you mean {close!r}?"
        elif close is not None:
            message += f" ({close!r} is planned but not supported by this release)"
    raise ValidationError.from_exception_data(what, [_problem(("type",), message, kind)])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
