"""Caption checks: flags for captions that should not go into training data unseen.

Per row (`flag_caption`): `empty`, `truncated`, `repetition`, `boilerplate`. Per run
(`add_duplicate_flags`): `duplicate`, the same caption text on `DUPLICATE_MIN_ROWS` or more clips.
A row's `flags` cell is the flags joined with "," in `FLAGS` order, "" when the caption is clean; failed
rows get no flags (their `error` says what went wrong).
"""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd

from .manifest import RID

EMPTY, TRUNCATED, REPETITION, BOILERPLATE, DUPLICATE = "empty", "truncated", "repetition", "boilerplate", "duplicate"
REPLACED = "replaced_chars"  # the model's text held invalid Unicode (lone surrogates), stored as U+FFFD
FLAGS = (EMPTY, TRUNCATED, REPETITION, BOILERPLATE, DUPLICATE, REPLACED)
SEP = ","

# Open-Sora's LLAVA_PREFIX (tools/datasets/datautil.py), in its order, duplicates included.
LLAVA_PREFIX = (
    "The video shows",
    "The video captures",
    "The video features",
    "The video depicts",
    "The video presents",
    "The video features",
    "The video is ",
    "In the video,",
    "The image shows",
    "The image captures",
    "The image features",
    "The image depicts",
    "The image presents",
    "The image features",
    "The image is ",
    "The image portrays",
    "In the image,",
)

# Identical text on this many distinct clips is a duplicate: two clips cut from one static shot can
# honestly share a caption, three or more identical VLM captions almost always mean a stock answer.
DUPLICATE_MIN_ROWS = 3

_TERMINAL = ".!?…。！？\"'”’)]»"
# Words a finished sentence does not end on; a long caption ending on one was cut off.
_DANGLING = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "of",
        "with",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "as",
        "while",
        "which",
        "that",
        "who",
        "whose",
        "is",
        "are",
        "was",
        "were",
        "its",
        "their",
        "his",
        "her",
        "this",
        "these",
        "those",
        "into",
        "onto",
        "over",
        "under",
        "through",
        "between",
        "behind",
        "near",
    ]
)
_TRUNCATE_MIN_WORDS = 12  # shorter unpunctuated captions are phrase-style captions, not cut ones
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE = re.compile(r"[^.!?。！？]+")


def is_empty(text) -> bool:
    """No words at all: None, NaN, whitespace or punctuation only."""
    if text is None or (isinstance(text, float) and text != text):
        return True
    return not _WORD.search(str(text))


def is_truncated(text: str, finish_reason: str | None = None) -> bool:
    """The token limit was hit, or the text ends mid-sentence.

    Mid-sentence: no closing punctuation, and either it ends on a comma/colon/dash, on a word that
    cannot end a sentence ("the", "and", "with"...), after an earlier finished sentence, or it is long
    (>= 12 words). Short phrase captions without a final period ("a dog on a beach") are not flagged.
    """
    if finish_reason == "length":
        return True
    body = str(text).rstrip()
    if not body or body[-1] in _TERMINAL:
        return False
    if body[-1] in ",;:-–—(":
        return True
    words = _WORD.findall(body.lower())
    if not words:
        return False
    earlier_sentence = bool(re.search(r"[.!?。！？]\s", body))
    return words[-1] in _DANGLING or earlier_sentence or len(words) >= _TRUNCATE_MIN_WORDS


def _looping_ngram(words: list[str]) -> bool:
    """A span of n words repeated back to back: 3 copies for n >= 2, 4 copies of a single word."""
    total = len(words)
    for n in range(1, min(12, total // 3) + 1):
        copies = 4 if n == 1 else 3
        if total < copies * n:
            continue
        for i in range(total - copies * n + 1):
            span = words[i : i + n]
            if all(words[i + c * n : i + (c + 1) * n] == span for c in range(1, copies)):
                return True
    return False


def _repeated_sentence(text: str) -> bool:
    seen: set[tuple[str, ...]] = set()
    for part in _SENTENCE.findall(text):
        words = tuple(_WORD.findall(part.lower()))
        if len(words) < 4:
            continue
        if words in seen:
            return True
        seen.add(words)
    return False


def _ngram_redundancy(words: list[str], n: int = 4) -> float:
    """Share of the text's n-grams that are repeats of an earlier one (0: all distinct)."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def is_repetitive(text: str) -> bool:
    """A generation loop: a phrase repeated back to back, a sentence said twice, or mostly repeated 4-grams."""
    words = _WORD.findall(str(text).lower())
    if len(words) < 4:
        return False
    if _looping_ngram(words) or _repeated_sentence(str(text)):
        return True
    return len(words) >= 24 and _ngram_redundancy(words) >= 0.35


def matched_prefix(text: str, prefixes=LLAVA_PREFIX) -> str | None:
    """The first stock prefix `text` starts with (case-insensitive), or None."""
    low = str(text).lstrip().lower()
    for p in prefixes:
        if low.startswith(p.lower()):
            return p
    return None


def strip_prefix(text: str, prefixes=LLAVA_PREFIX) -> str:
    """Open-Sora's remove_caption_prefix: drop the first matching stock prefix, capitalise what is left.

    Only one prefix is removed. Where Open-Sora raised IndexError on an empty remainder ("The video
    shows."), the text is returned unchanged so nothing is lost; it stays flagged `boilerplate`.
    """
    if not isinstance(text, str):
        return text
    p = matched_prefix(text, prefixes)
    if p is None:
        return text
    rest = text.lstrip()[len(p) :].strip()
    if not _WORD.search(rest):
        return text
    return rest[0].upper() + rest[1:]


def flag_caption(text, finish_reason: str | None = None, prefixes=LLAVA_PREFIX) -> list[str]:
    """The per-row flags of one caption, in `FLAGS` order."""
    if is_empty(text):
        return [EMPTY]
    text = str(text)
    flags = []
    if is_truncated(text, finish_reason):
        flags.append(TRUNCATED)
    if is_repetitive(text):
        flags.append(REPETITION)
    if matched_prefix(text, prefixes) is not None:
        flags.append(BOILERPLATE)
    return flags


def join_flags(flags) -> str:
    seen = set(flags)
    return SEP.join([f for f in FLAGS if f in seen] + sorted(seen - set(FLAGS)))


def parse_flags(cell) -> list[str]:
    """A `flags` cell (str joined with "," or "+", a list, None/NaN) -> list of flag names."""
    if cell is None or (isinstance(cell, float) and cell != cell):
        return []
    if hasattr(cell, "tolist") and not isinstance(cell, str):
        cell = cell.tolist()
    if isinstance(cell, (list, tuple)):
        return [str(c).strip() for c in cell if str(c).strip()]
    return [f.strip() for f in re.split(r"[,+]", str(cell)) if f.strip()]


class CaptionChecker:
    """What the caption stage calls per row: optional prefix stripping, then the row's flags."""

    def __init__(self, strip: bool = False, prefixes=LLAVA_PREFIX):
        self.strip = strip
        self.prefixes = tuple(prefixes)

    def check(self, text, finish_reason: str | None = None, error: str | None = None) -> tuple[str, str]:
        """(text to store, flags cell). A failed row keeps its text and gets no flags."""
        if error:
            return text, ""
        if self.strip and isinstance(text, str):
            text = strip_prefix(text, self.prefixes)
        return text, join_flags(flag_caption(text, finish_reason, self.prefixes))


def _norm(text) -> str:
    return " ".join(str(text).split()).casefold()


def duplicate_flags(texts, min_count: int = DUPLICATE_MIN_ROWS) -> list[bool]:
    """True where the (whitespace- and case-normalised) non-empty text occurs `min_count`+ times."""
    keys = [None if is_empty(t) else _norm(t) for t in texts]
    counts = Counter(k for k in keys if k is not None)
    return [k is not None and counts[k] >= min_count for k in keys]


def add_duplicate_flags(df: pd.DataFrame, min_count: int = DUPLICATE_MIN_ROWS) -> pd.DataFrame:
    """A copy of a run's results with `duplicate` set (or cleared) in `flags` from the run's texts.

    Counts one text per clip: rows sharing a `_rid` (the same file listed twice) count once. Only ok
    rows are counted and flagged. Idempotent, so it can run again on a resumed run's results.
    """
    out = df.copy()
    if "text" not in out.columns:
        return out
    if "flags" not in out.columns:
        out["flags"] = ""
    ok = out["status"].astype(str).eq("ok") if "status" in out.columns else pd.Series(True, index=out.index)
    keyed = out[ok]
    if RID in out.columns:
        keyed = keyed.drop_duplicates(subset=RID)
    counts = Counter(_norm(t) for t in keyed["text"] if not is_empty(t))
    new = []
    for text, good, cell in zip(out["text"], ok, out["flags"], strict=False):
        flags = [f for f in parse_flags(cell) if f != DUPLICATE]
        if good and not is_empty(text) and counts[_norm(text)] >= min_count:
            flags.append(DUPLICATE)
        new.append(join_flags(flags))
    out["flags"] = new
    return out


def flag_counts(df: pd.DataFrame) -> dict:
    """Rows per flag (every flag in `FLAGS`, zeros included) plus `flagged` (rows with any flag)."""
    counts = {f: 0 for f in FLAGS}
    flagged = 0
    for cell in df["flags"] if "flags" in df.columns else []:
        flags = parse_flags(cell)
        flagged += bool(flags)
        for f in flags:
            counts[f] = counts.get(f, 0) + 1
    counts["flagged"] = flagged
    return counts
