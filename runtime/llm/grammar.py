"""JSON replies that always parse: a JSON schema as a llama.cpp grammar (GBNF).

The grammar is applied while sampling, so the model can only write text the grammar accepts and
ends only when the value is complete. llama-cpp-python's schema converter does the translation;
two things are added around it:

- only the keywords the grammar really enforces are accepted. A keyword the converter would skip
  (`minimum`, `pattern`, `oneOf`...) is refused by name, because a reply the grammar lets through
  could then break it: a schema is either honoured or refused, never quietly loosened;
- strings exclude control characters (the converter's `char` rule lets a raw newline through,
  which is not JSON). Whitespace is at most one space, so a reply is always one line: no
  transcript stop string ("\\nUser:", a blank line) can cut it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from edge_ai.errors import EdgeAIError
from runtime.llamacpp.sampling import SchemaConverter

# Keywords the converter turns into grammar rules, and keywords that only describe.
_ENFORCED = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
    "maxItems", "enum", "const", "anyOf", "$ref", "$defs", "definitions", "minLength", "maxLength", "format",
})
_ANNOTATIONS = frozenset({
    "title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated", "readOnly",
    "writeOnly",
})
_FORMATS = frozenset({"date", "time", "date-time", "uuid"})
_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
# JSON string characters: anything but a quote, a backslash or a control character, or an escape.
_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


class SchemaError(EdgeAIError):
    """A schema the grammar cannot enforce; the message names where in the schema and why."""


def json_grammar(schema: Mapping[str, Any] | None = None) -> str:
    """GBNF for one JSON value matching `schema`; any JSON object when `schema` is None."""
    if schema is None:
        schema = {"type": "object"}
    _check(schema, "schema")
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        resolved = converter.resolve_refs(copy.deepcopy(dict(schema)), "schema")
        converter.visit(resolved, "")
    except (AssertionError, ValueError, KeyError, TypeError) as exc:
        raise SchemaError(f"schema: cannot be turned into a grammar ({exc})") from None
    if "char" in converter._rules:
        converter._rules["char"] = _CHAR
    return converter.format_grammar()


def _check(node: Any, path: str) -> None:
    """Refuse, naming its path, any keyword the grammar would not enforce."""
    if isinstance(node, bool):
        raise SchemaError(f"{path}: boolean schemas are not supported; write an object schema")
    if not isinstance(node, Mapping):
        raise SchemaError(f"{path}: a schema must be a JSON object, not {type(node).__name__}")
    for key in node:
        if key not in _ENFORCED and key not in _ANNOTATIONS:
            raise SchemaError(f"{path}: the keyword '{key}' is not supported (the grammar could not enforce it); "
                              f"supported: {', '.join(sorted(_ENFORCED))}")
    types = node.get("type", [])
    for name in types if isinstance(types, list) else [types]:
        if name not in _TYPES:
            raise SchemaError(f"{path}.type: unknown type {name!r}; use one of {', '.join(sorted(_TYPES))}")
    if "format" in node and node["format"] not in _FORMATS:
        raise SchemaError(f"{path}.format: {node['format']!r} is not supported; supported: {', '.join(sorted(_FORMATS))}")
    missing = set(node.get("required", [])) - set(node.get("properties", {}))
    if missing:
        raise SchemaError(f"{path}.required: {', '.join(sorted(missing))} must also be listed in properties")
    if ("minItems" in node or "maxItems" in node) and not isinstance(node.get("items"), Mapping):
        raise SchemaError(f"{path}: minItems and maxItems need an items schema")
    for key in ("properties", "$defs", "definitions"):
        for name, child in node.get(key, {}).items():
            _check(child, f"{path}.{key}.{name}")
    for key in ("anyOf", "prefixItems"):
        for i, child in enumerate(node.get(key, [])):
            _check(child, f"{path}.{key}[{i}]")
    items = node.get("items")
    for i, child in enumerate(items if isinstance(items, list) else [items] if items is not None else []):
        _check(child, f"{path}.items" + (f"[{i}]" if isinstance(items, list) else ""))
    if isinstance(node.get("additionalProperties"), Mapping):
        _check(node["additionalProperties"], f"{path}.additionalProperties")
