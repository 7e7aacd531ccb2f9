"""Self-healing captions: rows whose caption loops, is empty, was cut off or echoes the prompt are captioned
again with decoding adjusted for that row only, up to N attempts (`vidcap caption --heal N`).

Why per row: a repetition penalty for everyone damages legitimately repetitive text (Qwen3-VL#1611), while
the loops, empty answers and prompt echoes users report (LLaVA-NeXT#362, PLLaVA#14, Open-Sora#167) hit a
few rows. The schedule escalates: attempt 1 keeps greedy decoding and forbids repeats (repetition penalty
and no-repeat 4-grams in-process, frequency/presence penalties over an API); later attempts sample with a
fixed seed per attempt (the same command gives the same captions). A row is kept as it was unless an
attempt comes back free of every heal-worthy flag, so a good row, and a row that cannot be helped, keep
their caption; every attempt's flags are recorded in `heal_attempts`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace

from .checks import EMPTY, REPETITION, TRUNCATED, parse_flags
from .errors import PARSE

ECHO = "prompt_echo"  # the caption repeats the prompt back (a flag the caption stage adds)
INVALID_JSON = "invalid_json"  # --caption-format json: the caption is not valid against the schema (a `parse` error)
HEALABLE = frozenset({EMPTY, REPETITION, TRUNCATED, ECHO})
HEALED, UNHEALED = "healed", "unhealed"  # the `heal` column; "" for rows that needed nothing
ERROR_CODES = frozenset({"empty_text"})  # failed rows healing may redo: an API answer with no text
_WORD = re.compile(r"\w+", re.UNICODE)
_KEEP_TEXT = 400  # characters of each attempt's text kept in `heal_attempts` (the report shows them)


LOCAL_ONLY = frozenset({"repetition_penalty", "no_repeat_ngram_size"})
API_ONLY = frozenset({"frequency_penalty", "presence_penalty"})


@dataclass(frozen=True)
class Decoding:
    """Generation settings for one heal attempt; None leaves the run's own setting."""

    repetition_penalty: float | None = None  # in-process (transformers)
    no_repeat_ngram_size: int | None = None  # in-process
    frequency_penalty: float | None = None  # API
    presence_penalty: float | None = None  # API
    temperature: float | None = None  # > 0 samples
    top_p: float | None = None
    seed: int | None = None  # sampling seed (torch.manual_seed in-process, `seed` over the API)
    max_new_tokens: int | None = None  # a longer limit for a caption the limit cut off

    def as_dict(self, kind: str | None = None) -> dict:
        """The fields set; with kind "api" or "local" only those that kind of backend sends to its model."""
        skip = {"api": LOCAL_ONLY, "local": API_ONLY}.get(kind or "", frozenset())
        return {k: v for k, v in asdict(self).items() if v is not None and k not in skip}

    @property
    def samples(self) -> bool:
        return bool(self.temperature and self.temperature > 0)


def schedule(attempt: int, reasons: set[str], max_new_tokens: int | None) -> Decoding:
    """The decoding for heal attempt `attempt` (1-based) of a row flagged with `reasons`."""
    longer = None
    if TRUNCATED in reasons and REPETITION not in reasons and max_new_tokens:
        longer = int(max_new_tokens * (1 + 0.5 * attempt))  # cut off honestly: give it room to finish
    if INVALID_JSON in reasons:  # banned n-grams could leave a grammar no token (JSON repeats `","` and keys)
        return replace(_schedule(attempt, longer), no_repeat_ngram_size=None)
    return _schedule(attempt, longer)


def _schedule(attempt: int, longer: int | None) -> Decoding:
    if attempt == 1:
        return Decoding(
            repetition_penalty=1.3,
            no_repeat_ngram_size=4,
            frequency_penalty=0.6,
            presence_penalty=0.3,
            max_new_tokens=longer,
        )
    return Decoding(
        repetition_penalty=1.15,
        no_repeat_ngram_size=4,
        frequency_penalty=0.4,
        presence_penalty=0.2,
        temperature=0.7,
        top_p=0.9,
        seed=1000 + attempt,
        max_new_tokens=longer,
    )


def _words(text) -> list[str]:
    return _WORD.findall(str(text or "").lower())


def echoes_prompt(text, prompt: str | None, min_run: int = 6) -> bool:
    """The caption repeats the prompt: it opens with the prompt's first words, or most of its word 3-grams
    come from the prompt (a model returning its instructions instead of a description)."""
    if not prompt:
        return False
    cap, pr = _words(text), _words(prompt)
    if len(cap) < 3 or len(pr) < 3:
        return False
    n = min(min_run, len(pr))
    if len(cap) >= n and cap[:n] == pr[:n]:
        return True
    grams = [tuple(cap[i : i + 3]) for i in range(len(cap) - 2)]
    known = {tuple(pr[i : i + 3]) for i in range(len(pr) - 2)}
    return len(grams) >= 4 and sum(g in known for g in grams) / len(grams) >= 0.6


def reasons_of(flags_cell, error: str | None = None) -> set[str]:
    """The heal-worthy flags of a row (an API answer with no text counts as `empty`)."""
    if error:
        code = error.split(":", 1)[0].strip()
        if code == PARSE:  # a JSON caption that does not match its schema; cut off, it also gets more room
            return {INVALID_JSON} | (set(parse_flags(flags_cell)) & {TRUNCATED})
        return {EMPTY} if code in ERROR_CODES else set()
    return set(parse_flags(flags_cell)) & HEALABLE


@dataclass
class Attempt:
    attempt: int
    flags: str
    text: str
    decoding: dict | None = None
    finish_reason: str = ""
    error: str = ""

    def record(self) -> dict:
        out = {"attempt": self.attempt, "flags": self.flags, "text": self.text[:_KEEP_TEXT]}
        if self.decoding is not None:
            out["decoding"] = self.decoding
        if self.finish_reason:
            out["finish_reason"] = self.finish_reason
        if self.error:
            out["error"] = self.error
        return out


def heal_rows(rows: list[dict], requests: list, backend, attempts: int, rescore, repair=None) -> list[dict]:
    """Heal the rows that need it; `requests[i]` is row i's CaptionRequest (None: it cannot be redone),
    `rescore(result, request) -> row dict` turns a CaptionResult into an output row the way the stage does.
    `repair(row) -> row | None` (JSON captions) is tried first on an invalid row, without the model.
    Rows needing nothing come back unchanged (the very same dicts)."""
    if attempts < 1:
        return rows
    pending = {i: reasons_of(r.get("flags"), r.get("error")) for i, r in enumerate(rows)}
    pending = {i: why for i, why in pending.items() if why and requests[i] is not None}
    if not pending:
        return rows
    history = {
        i: [Attempt(0, _flag_text(rows[i]), str(rows[i].get("text") or ""), error=str(rows[i].get("error") or ""))]
        for i in pending
    }
    fixed = _repaired(rows, pending, history, repair)
    pending = {i: why for i, why in pending.items() if i not in fixed}
    for k in range(1, attempts + 1):
        if not pending:
            break
        groups: dict[Decoding, list[int]] = {}
        for i in pending:
            groups.setdefault(schedule(k, pending[i], backend.options.max_new_tokens), []).append(i)
        for decoding, idx in groups.items():
            results = backend.heal_caption([requests[i] for i in idx], decoding)
            for i, res in zip(idx, results, strict=False):
                new = rescore(res, requests[i])
                history[i].append(
                    Attempt(
                        k,
                        _flag_text(new),
                        str(new.get("text") or ""),
                        decoding.as_dict(_kind(backend)),
                        str(new.get("finish_reason") or ""),
                        str(new.get("error") or ""),
                    )
                )
                if not new.get("error") and not reasons_of(new.get("flags")):
                    fixed[i] = new
        pending = {i: why for i, why in pending.items() if i not in fixed}
        if not pending:
            break
    out = list(rows)
    for i, hist in history.items():
        kept = dict(fixed.get(i, rows[i]))
        kept["heal"] = HEALED if i in fixed else UNHEALED
        kept["heal_attempts"] = json.dumps([a.record() for a in hist], ensure_ascii=False)
        out[i] = kept
    return out


def _repaired(rows: list[dict], pending: dict, history: dict, repair) -> dict[int, dict]:
    """Invalid JSON rows closed by `repair` (a cut-off caption whose fields are all whole): attempt 1,
    no model call."""
    fixed: dict[int, dict] = {}
    for i, why in pending.items():
        new = repair(rows[i]) if repair is not None and INVALID_JSON in why else None
        if new is not None:
            history[i].append(Attempt(1, _flag_text(new), str(new.get("text") or ""), {"repair": "closed the JSON"}))
            fixed[i] = new
    return fixed


def _kind(backend) -> str | None:
    """Which decoding fields a backend uses, for the record: "api", "local" (transformers), None (both)."""
    takes: frozenset[str] = getattr(backend, "takes", frozenset())
    return "api" if "base_url" in takes else "local" if "dtype" in takes else None


def _flag_text(row: dict) -> str:
    return str(row.get("flags") or "") if not row.get("error") else "error"


def heal_counts(results) -> dict:
    """Rows healed, rows still flagged after healing, and the attempts made (for the run summary)."""
    if "heal" not in getattr(results, "columns", []):
        return {}
    col = results["heal"].astype(str)
    tries = 0
    for cell in results.get("heal_attempts", []):
        if isinstance(cell, str) and cell:
            try:
                tries += max(0, len(json.loads(cell)) - 1)
            except ValueError:
                pass
    return {"healed": int((col == HEALED).sum()), "unhealed": int((col == UNHEALED).sum()), "attempts": tries}
