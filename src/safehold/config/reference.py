"""docs/configuration.md, generated from the pydantic schema of targets.yml.

``python -m safehold.config.reference > docs/configuration.md``; a test keeps the file current,
so the reference can never drift from what the loader accepts.
"""

from __future__ import annotations

import json
from typing import Any

from . import loader
from .models import Config


def _type_of(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return spec["$ref"].rsplit("/", 1)[1]
    if "anyOf" in spec:
        return " or ".join(_type_of(s) for s in spec["anyOf"] if s.get("type") != "null")
    if "oneOf" in spec:
        return " or ".join(_type_of(s) for s in spec["oneOf"])
    if "const" in spec:
        return json.dumps(spec["const"])
    if "enum" in spec:
        return " \\| ".join(json.dumps(v) for v in spec["enum"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(spec.get('items', {}))}"
    if kind == "object" and "additionalProperties" in spec and isinstance(spec["additionalProperties"], dict):
        return f"map of {_type_of(spec['additionalProperties'])}"
    return kind


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    lines = ["| key | type | required | default | description | example |", "| --- | --- | --- | --- | --- | --- |"]
    for name, spec in schema.get("properties", {}).items():
        default = _cell(spec["default"]) if "default" in spec and spec["default"] is not None else ""
        example = _cell(spec["examples"][0]) if spec.get("examples") else ""
        lines.append(f"| `{name}` | {_cell(_type_of(spec))} | {'yes' if name in required else ''} | {default} "
                     f"| {_cell(spec.get('description', ''))} | {example} |")
    return lines


def markdown() -> str:
    schema = Config.model_json_schema()
    lines = [
        "# Configuration reference (`targets.yml`)",
        "",
        "Generated from the schema (`python -m safehold.config.reference > docs/configuration.md`); a test keeps",
        "this file current. `safehold config check` validates a file and reports every problem with its line;",
        "`safehold config schema` prints the JSON schema for editors. Secrets never go in this file: the",
        "repository password comes from the variable named by `password_env` or the file named by `password_file`.",
        "",
        "Loading is bounded, so a broken or hostile file fails at once with its line and the limit (exit 30):",
        f"at most {loader.MAX_FILE_BYTES} bytes, {loader.MAX_ALIASES} aliases (`*name`), {loader.MAX_NODES} nodes "
        f"once aliases are expanded, {loader.MAX_DEPTH} levels of nesting, and no alias inside its own anchor.",
        "",
        "## Top level",
        "",
        _cell(schema.get("description", "")),
        "",
        *_table(schema),
    ]
    for name, definition in sorted(schema.get("$defs", {}).items()):
        lines += ["", f"## {name}", "", _cell(definition.get("description", "")), ""]
        lines += _table(definition) if definition.get("properties") else [f"Type: {_type_of(definition)}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
