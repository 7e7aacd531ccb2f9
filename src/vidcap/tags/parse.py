"""Turn a chat model's answer into a clean tag list, repairing the usual mess where it is safe to.

Handled: `[dog, person]`, JSON or Python lists, lists inside code fences or after "Here are the objects:",
numbered and bulleted lines, a bare `dog, person` line, trailing prose, quotes, markdown bold, duplicates,
capitals, `NONE`/`[]`/`N/A`. Plurals are kept as written. Anything else raises VidcapError("parse", ...).
"""

from __future__ import annotations

import json
import re
import unicodedata

from ..errors import PARSE, VidcapError

MAX_WORDS = 5  # a tag longer than this is prose, not a tag
MAX_CHARS = 60
NONE_WORDS = frozenset(
    {
        "none",
        "none_found",
        "none found",
        "nothing",
        "n/a",
        "na",
        "null",
        "nil",
        "empty",
        "no objects",
        "no actions",
        "no tags",
        "not applicable",
        "-",
        "",
    }
)
_FILLER = frozenset({"sure", "ok", "okay", "yes", "no", "sorry", "certainly", "here", "hello", "hi"})
_QUOTES = "\"'`\u2018\u2019\u201c\u201d"
_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.S)
_ITEM_LINE_RE = re.compile(r"^\s*(?:[-*\u2022+\u2013\u00b7]|\(?\d{1,3}[.):]|\(?[a-z][.)])\s+(.+?)\s*$")
_LEAD_RE = re.compile(r"^(?:(?:a|an|the|and|or)\s+)+", re.I)
_PAREN_RE = re.compile(r"\s*[(\[{][^()\[\]{}]*[)\]}]\s*")


def parse_tags(text, truncated: bool = False) -> list[str]:
    """Clean, lower-case, de-duplicated tags in the model's order; `[]` when the model said there are none.

    `truncated`: the model hit its token limit, so an unclosed list's last item may be cut and is dropped.
    """
    if text is None or not str(text).strip():
        raise VidcapError(PARSE, "the model returned empty text")
    raw = str(text).strip()
    body = _unfence(raw)
    if _is_none(body):
        return []
    for attempt in (_from_brackets, _from_item_lines, _from_bare_line):
        found = attempt(body, truncated)
        if found is None:
            continue
        tags = _clean_all(found)
        if tags or all(_is_none(x) for x in found):
            return tags
    raise VidcapError(PARSE, f"no tag list in the model output: {_snippet(raw)}")


def _snippet(raw: str, n: int = 120) -> str:
    one = " ".join(raw.split())
    return repr(one if len(one) <= n else one[: n - 3] + "...")


def _unfence(text: str) -> str:
    m = _FENCE_RE.search(text)
    return m.group(1).strip() if m else text


def _is_none(text: str) -> bool:
    t = text.strip().strip(_QUOTES + ".!:;").strip()
    t = t[1:-1].strip().strip(_QUOTES) if t.startswith("[") and t.endswith("]") else t
    return t.lower().replace("_", " ") in NONE_WORDS or t.lower() in NONE_WORDS


def _from_brackets(text: str, truncated: bool) -> list[str] | None:
    """The first `[...]` list (the seed's format); JSON-decoded when it is JSON, split on commas otherwise."""
    start = text.find("[")
    if start < 0:
        return None
    end = text.find("]", start + 1)
    if end < 0:
        inner = text[start + 1 :]
        items = _split(inner)
        if truncated and items and not inner.rstrip().endswith((",", ";")):
            items = items[:-1]
        return items
    chunk = text[start : end + 1]
    try:
        value = json.loads(chunk)
    except ValueError:
        value = None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return _split(chunk[1:-1])


def _split(inner: str) -> list[str]:
    return [p for p in re.split(r"[,;\n]", inner) if p.strip()]


def _from_item_lines(text: str, truncated: bool) -> list[str] | None:
    """Numbered or bulleted lines; a `dog: a brown dog` line keeps the part before the colon."""
    items = []
    for line in text.splitlines():
        m = _ITEM_LINE_RE.match(line)
        if m:
            items.append(_head(m.group(1)))
    if not items:
        return None
    if truncated and text.splitlines()[-1].strip() and _ITEM_LINE_RE.match(text.splitlines()[-1]):
        items = items[:-1]
    return items


def _head(item: str) -> str:
    item = item.replace("**", "").replace("__", "")
    for sep in (": ", " - ", " \u2013 ", " \u2014 "):
        if sep in item:
            return item.split(sep, 1)[0]
    return item


def _from_bare_line(text: str, truncated: bool) -> list[str] | None:
    """`dog, person` on a line of its own, perhaps after a short `Objects:` label."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        label, sep, rest = line.partition(":")
        if sep and len(label.split()) <= 6 and rest.strip():
            line = rest.strip()
        elif sep:
            continue  # "Here are the objects:" alone; the list follows on later lines
        parts = _split(line)
        if (len(parts) > 1 or _short_answer(line, text)) and all(len(p.split()) <= MAX_WORDS for p in parts):
            if truncated and len(parts) > 1 and line == text.splitlines()[-1].strip():
                parts = parts[:-1]
            return parts
    return None


def _short_answer(line: str, text: str) -> bool:
    """A single short line (`dog`) is a one-tag answer; a filler word like `Sure!` is not."""
    words = line.strip(_QUOTES + ".!").split()
    return len(text.strip().splitlines()) == 1 and 0 < len(words) <= 3 and words[0].lower().strip(",!.") not in _FILLER


def clean_tag(item: str) -> str:
    """One tag: no quotes, markdown, numbering, articles or trailing punctuation; lower case."""
    t = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in str(item))  # control chars
    t = t.replace("**", "").replace("__", "").strip()
    t = re.sub(r"^\s*(?:\d{1,3}[.)]|[-*\u2022+])\s+", "", t)
    t = t.strip().strip(_QUOTES).strip()
    t = _PAREN_RE.sub(" ", t).strip()
    t = t.strip(_QUOTES + " .!?:;,").strip()
    t = _LEAD_RE.sub("", t)
    return " ".join(t.lower().split())


def _clean_all(items: list[str]) -> list[str]:
    out: list[str] = []
    seen = set()
    for item in items:
        tag = clean_tag(item)
        if not any(ch.isalnum() for ch in tag) or _is_none(tag) or len(tag.split()) > MAX_WORDS or len(tag) > MAX_CHARS:
            continue
        if tag not in seen:
            seen.add(tag)
            out.append(tag)
    return out


def tags_from_cell(value) -> list[str] | None:
    """A stored tag cell -> list: a Parquet list, a JSON array string (our CSV) or the seed's `dog, person`.

    None for a missing cell (a failed row); `NONE_FOUND` (the seed's marker) -> [].
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return _clean_all([str(v) for v in value if v is not None])
    text = str(value).strip()
    if not text:
        return None
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, list):
        return _clean_all([str(v) for v in decoded if v is not None])
    if _is_none(text):
        return []
    return _clean_all(_split(text))
