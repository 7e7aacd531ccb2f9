"""`vidcap caption --variants short,dense`: several captions of one clip, one per prompt of the prompt table,
from one decode of its frames (and, in vidcap's engine, one visual prefill shared by every variant).

Each variant has its own columns: `caption_<name>` (its text), `caption_<name>_error`, its token counts and
finish reason. `text` (and `prompt`, `prompt_tokens`, `completion_tokens`, `finish_reason`, `flags`) are the
first variant's, as a run with `--prompt <first>` would have written them. A row is ok when every variant
is; otherwise its `error` names the first variant that failed, with that variant's error code (so a resume
redoes the row, every variant of it, exactly when it would redo a one-prompt row with that error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..backends.base import CaptionOptions
from ..errors import UsageError, error_code
from ..prompts.caption import PromptSpec, get_prompt, prompt_names

DEFAULT_LIMIT = 256
FIELDS = ("error", "prompt_tokens", "completion_tokens", "finish_reason")
INT_FIELDS = ("prompt_tokens", "completion_tokens")


def column(name: str) -> str:
    """The output column of a variant: `caption_` + its name with anything but letters and digits as `_`."""
    return "caption_" + re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def parse_variants(value) -> tuple[str, ...] | None:
    """`short,dense` (or a list) -> ("short", "dense"); None when empty."""
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names if str(n).strip()]
    return tuple(names) or None


@dataclass(frozen=True)
class VariantPlan:
    specs: tuple[PromptSpec, ...]
    limits: tuple[int, ...]  # each variant's token limit

    @classmethod
    def of(cls, options: CaptionOptions) -> VariantPlan | None:
        """The run's variants (None without --variants); a name or combination that cannot work is refused
        in one sentence."""
        names = parse_variants(options.variants)
        if not names:
            return None
        if options.prompt or options.prompt_text is not None:
            raise UsageError(
                "--variants names every prompt of the run (the first fills `text`); drop --prompt / --prompt-file."
            )
        if options.heal:
            raise UsageError("--heal does not work with --variants yet; drop one of them.")
        specs = []
        for name in names:
            try:
                specs.append(get_prompt(name))
            except UsageError:
                raise UsageError(
                    f"unknown variant '{name}': --variants takes prompt names ({', '.join(prompt_names())})."
                ) from None
        cols = [column(n) for n in names]
        twice = next((n for n, c in zip(names, cols, strict=True) if cols.count(c) > 1), None)
        if twice is not None:
            raise UsageError(
                f"--variants names '{twice}' twice (or two names that make the same column {column(twice)})."
            )
        user = options.max_new_tokens
        limits = tuple(
            min(user, s.max_new_tokens or user) if user else (s.max_new_tokens or DEFAULT_LIMIT) for s in specs
        )
        return cls(tuple(specs), limits)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def columns(self) -> list[str]:
        return [f"{column(n)}{'_' + f if f else ''}" for n in self.names for f in ("", *FIELDS)]

    @property
    def dtypes(self) -> dict[str, str]:
        return {f"{column(n)}_{f}": "Int64" for n in self.names for f in INT_FIELDS}

    def row(self, rows: list[dict]) -> dict:
        """One output row from each variant's own row (as `CaptionStage._row` makes it)."""
        out = dict(rows[0])
        out["prompt"] = self.names[0]
        for name, r in zip(self.names, rows, strict=True):
            col = column(name)
            out[col] = r.get("text", "") if not r.get("error") else ""
            for f in FIELDS:
                out[f"{col}_{f}"] = r.get(f)
        failed = next(((n, r["error"]) for n, r in zip(self.names, rows, strict=True) if r.get("error")), None)
        if failed is not None:
            name, err = failed
            code = error_code(err) or "model"
            detail = err.split(":", 1)[1].strip() if ":" in err else err
            out["error"] = f"{code}: variant '{name}': {detail}"
        return out
