"""The caption stage's side of structured captions (--caption-format json): the prompt that asks for the
schema, the check of each caption against it, and the repair --heal tries first on a cut-off one."""

from __future__ import annotations

import json

from ..checks import REPLACED, TRUNCATED, join_flags, parse_flags
from ..errors import PARSE, format_error
from ..heal import ECHO
from ..prompts.caption import PLLAVA_USER_QUERY, PromptSpec
from ..schemas import Schema, repair_truncated

JSON_MAX_NEW_TOKENS = 1024  # the default limit for JSON captions (the built-ins' fields fit in ~800 tokens)
REPAIRED = "json_repaired"  # flag: the caption was cut off after its last complete field and closed by --heal


def schema_prompt(schema: Schema, kind: str = "video") -> PromptSpec:
    """The prompt spec asking for `schema` (named `json-<schema>` in the `prompt` column)."""
    return PromptSpec(f"json-{schema.name}", schema.prompt(kind), kind, False, PLLAVA_USER_QUERY, JSON_MAX_NEW_TOKENS)


def json_caption(schema: Schema, text: str, flags: str, checker) -> tuple[str, str, str]:
    """(caption, error, flags): compact JSON in schema order, "", and the flags of its fields' text (a
    complete JSON caption is not `truncated`, whatever its last character); or the text as it came, a
    `parse` error and the flags the text had."""
    compact, why = schema.check(text)
    if why:
        return text, format_error(PARSE, f"{why} (schema {schema.name})"), flags
    words = ". ".join(_strings(json.loads(compact)))
    _, field_flags = checker.check(words, "stop", "")
    kept = [f for f in parse_flags(field_flags) if f != TRUNCATED] + [
        f for f in parse_flags(flags) if f in (REPLACED, ECHO)
    ]
    return compact, "", join_flags(kept)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def repair_row(schema: Schema, row: dict) -> dict | None:
    """The row with its cut-off JSON closed after the last complete value, when that is valid against the
    schema (every required field whole); None otherwise."""
    fixed = repair_truncated(row.get("text"))
    if fixed is None:
        return None
    compact, why = schema.check(fixed)
    if why:
        return None
    flags = [f for f in parse_flags(row.get("flags")) if f != TRUNCATED] + [REPAIRED]
    return {**row, "text": compact, "text_raw": row.get("text") or "", "error": "", "flags": join_flags(flags)}
