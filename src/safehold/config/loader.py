"""Load ``targets.yml`` and explain every problem in it by file, line and key.

The YAML is composed to a node tree first, so each key path keeps the line it
was written on; pydantic's ``ValidationError`` is then turned into one
``ConfigError`` listing every problem as
``targets.yml:14: targets[web-01].retention.keep_dayly: unknown key 'keep_dayly'; did you mean 'keep_daily'? ...``.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from safehold.config.models import Config
from safehold.errors import ConfigError, ConfigNotFound

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG_PATH", "load_config", "load_config_text", "resolve_config_path"]

CONFIG_ENV = "SAFEHOLD_CONFIG"
DEFAULT_CONFIG_PATH = Path("configs/targets.yml")

# Bounds on what a configuration may cost to load. YAML aliases let a few
# hundred bytes describe billions of nodes ("billion laughs"): PyYAML shares the
# aliased objects, but everything after it (line mapping, pydantic) walks the
# expansion. The limits sit far above any real targets.yml (the shipped example
# is about 300 nodes) and far below what hurts a host.
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_ALIASES = 1_000  # '*name' uses, e.g. one '<<: *defaults' per target
MAX_NODES = 200_000  # after expanding every alias
MAX_DEPTH = 64  # collections inside collections

_Key = tuple[str, ...]


def resolve_config_path(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The file to read: ``path``, else $SAFEHOLD_CONFIG, else ./configs/targets.yml."""
    environ = os.environ if environ is None else environ
    if path is not None and os.fspath(path) != "":
        return Path(path)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration.

    Raises ConfigNotFound when the file does not exist and ConfigError, listing
    every problem with its line, when it is not valid.
    """
    file = resolve_config_path(path, environ)
    try:
        with open(file, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)  # never read a huge (or endless: /dev/zero) file whole
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(str(file), [_too_large(str(file))])
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigNotFound(path=str(file)) from None
    except IsADirectoryError:
        problem = f"{file}: is a directory; expected a YAML file such as {file / 'targets.yml'}"
        raise ConfigError(str(file), [problem]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(str(file), [f"{file}: not UTF-8 text (byte {error.start})"]) from None
    except OSError as error:
        raise ConfigError(str(file), [f"{file}: cannot read: {error.strerror or error}"]) from None
    return load_config_text(text, file, environ)


def load_config_text(text: str, path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """Validate configuration ``text`` as if read from ``path``.

    ``path`` names the file in messages and anchors relative paths (its
    directory); it need not exist. ``environ`` defaults to os.environ.
    """
    display = os.fspath(path)
    base_dir = Path(os.path.abspath(display)).parent
    data, lines = _parse(text, display)
    if data is None:
        problem = f"{display}:1: the file is empty; expected a mapping with 'repository' and 'targets'"
        raise ConfigError(display, [problem])
    context = {"base_dir": base_dir, "environ": os.environ if environ is None else environ, "path": Path(display)}
    try:
        return Config.model_validate(data, context=context)
    except ValidationError as error:
        # ``from None``: the pydantic error shows input values, which may hold secrets.
        raise ConfigError(display, _explain(error, data, lines, display)) from None


# --- YAML with line numbers -------------------------------------------------


def _too_large(display: str) -> str:
    return (
        f"{display}:1: the file is larger than {MAX_FILE_BYTES} bytes, the limit for a configuration; "
        "is this the right file?"
    )


class _LimitExceeded(Exception):
    def __init__(self, mark: yaml.Mark | None, problem: str) -> None:
        super().__init__(problem)
        self.line = mark.line + 1 if mark is not None else 1
        self.problem = problem


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses too many aliases and too deep nesting while composing.

    Depth is checked before PyYAML recurses (its composer is recursive, so a
    100,000-deep '[[[...' would otherwise end in RecursionError); the expanded
    size is checked on the composed node graph by :func:`_check_expansion`.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitExceeded(
                    self.peek_event().start_mark,
                    f"more than {MAX_ALIASES} aliases (*name); the limit guards against alias bombs",
                )
            return super().compose_node(parent, index)
        if self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            if self._depth >= MAX_DEPTH:
                raise _LimitExceeded(
                    self.peek_event().start_mark, f"values nested deeper than {MAX_DEPTH} levels (the limit)"
                )
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes the document holds once every alias is expanded; refuse cycles and bombs.

    Sizes are memoised per node, so this costs one pass over the composed graph
    (bounded by the file size), not over the expansion.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative post-order walk: (node, children pushed yet?)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if expanded:
            on_path.discard(key)
            children = _children(node)
            total = 1 + sum(sizes[id(child)] for child in children)
            if total > MAX_NODES:
                raise _LimitExceeded(
                    node.start_mark,
                    f"aliases expand to more than {MAX_NODES} nodes (the limit); "
                    "a configuration never needs that many: is this an alias bomb?",
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _LimitExceeded(node.start_mark, "an alias refers to itself (a recursive structure)")
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise _LimitExceeded(child.start_mark, "an alias refers to itself (a recursive structure)")
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _parse(text: str, display: str) -> tuple[Any, dict[_Key, int]]:
    """Parse YAML into plain data and a map from key path to (1-based) line."""
    if len(text) > MAX_FILE_BYTES:  # characters: at least as many bytes
        raise ConfigError(display, [_too_large(display)])
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_expansion(node)
        problems = _duplicate_keys(node, display)
        # construct_document flattens '<<' merge keys in place, so lines are mapped afterwards.
        data = loader.construct_document(node)
    except _LimitExceeded as error:
        raise ConfigError(display, [f"{display}:{error.line}: {error.problem}"]) from None
    except yaml.MarkedYAMLError as error:
        raise ConfigError(display, [_yaml_problem(error, display)]) from None
    except yaml.YAMLError as error:
        raise ConfigError(display, [f"{display}: YAML error: {error}"]) from None
    finally:
        loader.dispose()
    if problems:
        raise ConfigError(display, problems)
    lines: dict[_Key, int] = {(): node.start_mark.line + 1}
    _map_lines(node, (), lines, depth=0)
    return data, lines


def _yaml_problem(error: yaml.MarkedYAMLError, display: str) -> str:
    mark = error.problem_mark or error.context_mark
    line = f"{mark.line + 1}" if mark is not None else "?"
    problem = error.problem or "syntax error"
    if error.context:
        problem = f"{problem} ({error.context})"
    hint = ""
    if "alias" in problem:
        hint = "; values starting with '*' must be quoted, e.g. schedule: \"*/15 * * * *\""
    elif "'\\t'" in problem or "\t" in problem:
        hint = "; indent with spaces, not tabs"
    return f"{display}:{line}: YAML syntax error: {problem}{hint}"


def _duplicate_keys(node: yaml.Node, display: str) -> list[str]:
    """PyYAML silently keeps the last of two equal keys; a config must not."""
    problems: list[tuple[int, str]] = []
    stack, seen_nodes = [node], set()
    while stack:
        current = stack.pop()
        if id(current) in seen_nodes:
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in first:
                        problems.append(
                            (
                                line,
                                f"{display}:{line}: key {key.value!r} appears twice (also on line {first[key.value]}); "
                                "the second would silently replace the first",
                            )
                        )
                    else:
                        first[key.value] = line
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return [text for _, text in sorted(problems)]


def _map_lines(node: yaml.Node, key: _Key, lines: dict[_Key, int], depth: int) -> None:
    if depth > 100:  # recursive aliases
        return
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*key, key_node.value)
                # Later pairs win, as in the constructed data (explicit keys after merged ones).
                lines[child] = key_node.start_mark.line + 1
                _map_lines(value_node, child, lines, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*key, str(index))
            lines[child] = item.start_mark.line + 1
            _map_lines(item, child, lines, depth + 1)


# --- explaining validation errors ---------------------------------------------


def _explain(error: ValidationError, data: Any, lines: dict[_Key, int], display: str) -> list[str]:
    explained: list[tuple[int, int, str]] = []
    for order, detail in enumerate(error.errors()):
        loc = _strip_tags(detail["loc"], data)
        line = _line_of(loc, lines)
        where = _dotted(loc, data)
        message = _message(detail, loc, data)
        prefix = f"{display}:{line}: "
        explained.append((line, order, f"{prefix}{where}: {message}" if where else prefix + message))
    explained.sort()
    return [text for _, _, text in explained]


def _step(data: Any, element: object) -> Any:
    if isinstance(data, dict):
        if element in data:
            return data[element]
        for key, value in data.items():  # tiers: the loc holds int keys, YAML may hold strings
            if str(key) == str(element):
                return value
        return None
    if isinstance(data, list) and isinstance(element, int) and 0 <= element < len(data):
        return data[element]
    return None


def _strip_tags(loc: tuple[int | str, ...], data: Any) -> tuple[int | str, ...]:
    """Drop the union tag pydantic inserts after a tagged mapping (``source.files.paths``)."""
    kept: list[int | str] = []
    current = data
    for position, element in enumerate(loc):
        is_tag = (
            isinstance(current, dict)
            and element not in current
            and current.get("type") == element
            and position < len(loc) - 1
        )
        if is_tag:
            continue
        kept.append(element)
        current = _step(current, element)
    return tuple(kept)


def _line_of(loc: tuple[int | str, ...], lines: dict[_Key, int]) -> int:
    key = tuple(str(element) for element in loc)
    while key not in lines:
        key = key[:-1]
    return lines[key]


def _dotted(loc: tuple[int | str, ...], data: Any) -> str:
    """``targets[web-01].retention.keep_daily``: list items by their name when it is unique."""
    text = ""
    current = data
    for element in loc:
        if isinstance(current, list) and isinstance(element, int):
            label: object = element
            item = _step(current, element)
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                names = [other.get("name") for other in current if isinstance(other, dict)]
                if names.count(item["name"]) == 1:
                    label = item["name"]
            text += f"[{label}]"
        else:
            text += f".{element}" if text else str(element)
        current = _step(current, element)
    return text


def _message(detail: Any, loc: tuple[int | str, ...], data: Any) -> str:
    kind = detail["type"]
    text: str = detail["msg"]
    value = detail.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(str(loc[-1]), loc[:-1], data)
    if kind == "missing":
        return f"missing required key {loc[-1]!r}" if loc else "missing required key"
    if kind in ("config", "value_error", "assertion_error"):
        return text.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_describe(value)}"
    if kind == "list_type":
        hint = f"; write [{value}] or one '- item' per line" if isinstance(value, str) else ""
        return f"expected a list, got {_describe(value)}{hint}"
    if kind == "literal_error" and "expected" in (detail.get("ctx") or {}):
        return f"{value!r} is not valid; expected {detail['ctx']['expected']}"
    readable = text[:1].lower() + text[1:]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return f"{value!r} is not valid; {readable}"
    return readable


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (str, int, float, bool)):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _unknown_key(key: str, parent: tuple[int | str, ...], data: Any) -> str:
    model = _model_at(parent, data)
    message = f"unknown key {key!r}"
    if model is None:
        return message
    valid = list(model.model_fields)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {close[0]!r}?"
    else:
        home = _field_holding(model, key)
        if home:
            message += f"; it belongs under {home!r}"
    # Never echo the value: an unknown key may well be a misplaced secret.
    return f"{message} (valid keys: {', '.join(valid)})"


def _unwrap(annotation: Any, data: Any) -> Any:
    """Reduce Annotated/Optional/tagged unions to the one type that applies to ``data``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin is typing.Union or origin is types.UnionType:
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
            tag = data.get("type") if isinstance(data, dict) else None
            chosen = [member for member in members if _is_model(member) and tag in _tags(member)]
            if len(chosen) != 1:
                return None
            annotation = chosen[0]
        elif callable(getattr(annotation, "model_for", None)):  # a dispatch on 'type' (config.sources.Source)
            annotation = annotation.model_for(data)
            if annotation is None:
                return None
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _tags(model: type[BaseModel]) -> tuple[object, ...]:
    field = model.model_fields.get("type")
    return typing.get_args(field.annotation) if field is not None else ()


def _model_at(loc: tuple[int | str, ...], data: Any) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (None when unknown)."""
    annotation: Any = Config
    current = data
    for element in loc:
        annotation = _unwrap(annotation, current)
        if _is_model(annotation):
            field = annotation.model_fields.get(str(element))
            if field is None:
                return None
            annotation = field.annotation
        elif typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return None
        current = _step(current, element)
    annotation = _unwrap(annotation, current)
    return annotation if _is_model(annotation) else None


def _field_holding(model: type[BaseModel], key: str) -> str | None:
    """The field of ``model`` whose own mapping accepts ``key`` (for keys one level too high)."""
    for name, field in model.model_fields.items():
        child = _unwrap(field.annotation, None)
        if _is_model(child) and key in child.model_fields:
            return name
    return None
