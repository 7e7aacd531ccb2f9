"""Structured captions (`vidcap caption --caption-format json --schema NAME|FILE`): the built-in JSON
Schemas, a user's schema file, the prompt that asks a model for the schema, and the check of what came back.

A schema keeps to the subset of JSON Schema that constrained decoding (llguidance) implements, so a schema
that works over an API also works in vidcap's engine; any other keyword is refused in one sentence.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import UsageError

BUILTIN = ("hunyuan", "cosmos", "opensora")
# Keywords llguidance's JSON compiler implements (and jsonschema checks); `x-...` keys are allowed anywhere.
SUPPORTED = frozenset(
    {
        "$schema",
        "$id",
        "$ref",
        "$defs",
        "definitions",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "minProperties",
        "maxProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "anyOf",
        "oneOf",
        "allOf",
    }
)
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_ONE = ("items", "additionalProperties")


@dataclass(frozen=True)
class Schema:
    """A caption schema: its name (a built-in's or the file's stem), the JSON Schema, where it came from."""

    name: str
    schema: dict = field(hash=False)
    source: str = "built-in"

    @property
    def text(self) -> str:
        return json.dumps(self.schema, sort_keys=True, separators=(",", ":"))

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()[:12]

    def fields(self) -> list[str]:
        return list((self.schema.get("properties") or {}).keys())

    def prompt(self, kind: str = "video") -> str:
        """The prompt asking for this schema: what to describe, each field with its description, and the
        answer's form (one compact JSON object, nothing else)."""
        lines = [
            f"Describe this {kind} for a text-to-{kind} training caption, as one JSON object.",
            str(self.schema.get("description") or "").strip(),
            "Fields, in this order:",
        ]
        lines += _field_lines(self.schema, "")
        lines.append(
            "Answer with the JSON object only: no code fence, no text before or after it; every field is "
            "required unless marked optional, and each string stays within its length limit."
        )
        return "\n".join(line for line in lines if line)

    def check(self, text: str) -> tuple[str, str]:
        """(the caption as compact JSON with keys in schema order, "") when `text` holds one JSON value
        valid against the schema, else (text as it was, why not in one sentence)."""
        value, why = parse_json(text)
        if why:
            return text, why
        why = validate(value, self.schema)
        if why:
            return text, why
        return dump(order_keys(value, self.schema)), ""


def load_schema(spec: str) -> Schema:
    """A built-in schema by name, or a JSON Schema file (one sentence when it cannot be used)."""
    spec = str(spec or "").strip()
    if spec in BUILTIN:
        text = resources.files(__package__).joinpath(f"{spec}.json").read_text(encoding="utf-8")
        return Schema(spec, json.loads(text))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UsageError(
            f"--schema '{spec}' is neither a built-in schema ({', '.join(BUILTIN)}) nor a JSON Schema file."
        )
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--schema {path} is not a readable JSON file ({_first(exc)}).") from None
    check_schema(schema, str(path))
    return Schema(path.stem, schema, str(path))


def check_schema(schema, where: str) -> None:
    """Refuse, in one sentence, a schema that is not a JSON Schema object for a JSON object, that breaks the
    metaschema, or that uses a keyword outside the supported subset."""
    if not isinstance(schema, dict):
        raise UsageError(f"--schema {where} must hold a JSON object (a JSON Schema), not {type(schema).__name__}.")
    if schema.get("type") != "object":
        raise UsageError(f'--schema {where} must describe a JSON object ("type": "object" at the top).')
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        at = "/".join(str(p) for p in exc.path) or "the top"
        raise UsageError(f"--schema {where} is not a valid JSON Schema at {at}: {_first(exc)}.") from None
    bad = unsupported_keywords(schema)
    if bad:
        path, key = bad[0]
        raise UsageError(
            f"--schema {where} uses '{key}' (at {path or 'the top'}), which constrained decoding does not "
            f"support; keep to: {', '.join(sorted(SUPPORTED - {'$comment', 'examples'}))}."
        )


def unsupported_keywords(schema, path: str = "") -> list[tuple[str, str]]:
    """(path, keyword) for every keyword outside SUPPORTED, depth first."""
    if not isinstance(schema, dict):
        return []
    found = [(path, k) for k in schema if k not in SUPPORTED and not k.startswith("x-")]
    for key in _SUBSCHEMA_MAPS:
        for name, sub in (schema.get(key) or {}).items() if isinstance(schema.get(key), dict) else []:
            found += unsupported_keywords(sub, f"{path}/{key}/{name}")
    for key in _SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or []) if isinstance(schema.get(key), list) else []:
            found += unsupported_keywords(sub, f"{path}/{key}/{i}")
    for key in _SUBSCHEMA_ONE:
        found += unsupported_keywords(schema.get(key), f"{path}/{key}")
    return found


def parse_json(text) -> tuple[object, str]:
    """(value, "") for text holding one JSON value (a code fence or words around it are tolerated, as
    API models add them), else (None, why)."""
    text = str(text or "").strip()
    if not text:
        return None, "the caption is empty"
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None, "the caption holds no JSON object"
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError as exc:
        cut = "it is cut off" if _unclosed(text[start:]) else _first(exc)
        return None, f"the caption is not valid JSON ({cut})"
    return value, ""


def validate(value, schema: dict) -> str:
    """ "" when `value` is valid against `schema`, else the first problem in one sentence."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return ""
    err = errors[0]
    at = "/".join(str(p) for p in err.path) or "the top"
    return f"the JSON does not match the schema at {at}: {_first(err)}"


def order_keys(value, schema):
    """`value` with every object's keys in the order its schema lists them (others after, as they came)."""
    if isinstance(value, dict) and isinstance(schema, dict):
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        keys = [k for k in props if k in value] + [k for k in value if k not in props]
        return {k: order_keys(value[k], props.get(k, {})) for k in keys}
    if isinstance(value, list) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
        return [order_keys(v, schema["items"]) for v in value]
    return value


def dump(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def repair_truncated(text) -> str | None:
    """JSON cut off by the token limit, closed without inventing or cutting any value: the open brackets
    are closed after the last complete value (a trailing comma or half-written key or number dropped). A cut
    inside a string value is not repaired (its text would end mid-sentence). None when nothing sound works."""
    text = str(text or "")
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    body = text[start:].rstrip()
    cuts = _cut_points(body)
    if cuts is None:
        return None
    for end, stack in reversed(cuts):
        candidate = body[:end].rstrip().rstrip(",") + "".join("}" if c == "{" else "]" for c in reversed(stack))
        try:
            json.loads(candidate)
        except ValueError:
            continue
        return candidate
    return None


def _cut_points(body: str) -> list[tuple[int, list[str]]] | None:
    """Positions where the text may end (after a string or a bracket, before a comma) with the brackets open
    there; None when the text closes its outer value (nothing was cut off). A number or literal at the cut is
    never an end: `1` may be the start of `10`."""
    stack: list[str] = []
    cuts: list[tuple[int, list[str]]] = []
    in_str = esc = False
    for i, ch in enumerate(body):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
                cuts.append((i + 1, list(stack)))
            continue
        if ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append(ch)
            cuts.append((i + 1, list(stack)))
        elif ch in "}]":
            if not stack:
                return None
            stack.pop()
            if not stack:
                return None  # complete: not a truncation
            cuts.append((i + 1, list(stack)))
        elif ch == ",":
            cuts.append((i, list(stack)))  # a number or literal before it is whole: the comma ends it
    return cuts if not in_str or cuts else None


def _unclosed(text: str) -> bool:
    return _cut_points(text.strip()) not in (None, [])


def _field_lines(schema: dict, indent: str) -> list[str]:
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = set(schema.get("required") or [])
    lines = []
    for name, sub in props.items():
        sub = sub if isinstance(sub, dict) else {}
        desc = str(sub.get("description") or "").strip()
        notes = []
        if "enum" in sub:
            notes.append("one of: " + ", ".join(json.dumps(v, ensure_ascii=False) for v in sub["enum"]))
        if "maxLength" in sub:
            notes.append(f"at most {sub['maxLength']} characters")
        if name not in required:
            notes.append("optional")
        kind = sub.get("type", "value")
        lines.append(f'{indent}- "{name}" ({kind}): {desc}' + (f" ({'; '.join(notes)})" if notes else ""))
        if sub.get("type") == "object":
            lines += _field_lines(sub, indent + "  ")
    return lines


def _first(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return " ".join(str(msg).split())[:200].rstrip(".")
