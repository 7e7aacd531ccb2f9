"""The caption stage: frames from worker processes -> a caption backend -> text and provenance columns."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import pandas as pd
import pyarrow as pa

from ..backends.base import CaptionOptions, CaptionRequest, CaptionResult
from ..backends.registry import Preset, make_backend
from ..backends.spend import budget_stop
from ..backends.structured import schema_of
from ..checks import add_duplicate_flags, flag_counts
from ..errors import UsageError, VidcapError
from ..manifest import ABSPATH, RID, read_range
from ..neardup import add_near_dup_columns
from .base import Item, ResultTable, Stage
from .caption_json import json_caption, repair_row, schema_prompt
from .caption_variants import VariantPlan


@dataclass
class PromptPicker:
    """The prompt for a row (image rows get the image prompt unless the user chose one); picklable."""

    prompt: object | None  # PromptSpec, None for a custom prompt text
    image_prompt: object
    custom: str | None
    user_prompt: bool
    variants: tuple = ()  # --variants: (PromptSpec, token limit) per variant; the first is also `prompt`

    def meta(self, is_image: bool) -> dict:
        """What the backend needs to know about the prompt besides its text (vidcap's question prompts)."""
        spec = self.spec(is_image)
        return {"question": True} if getattr(spec, "question", False) else {}

    def requests(self, frames, row: dict | None, is_image: bool, meta: dict) -> list[CaptionRequest]:
        """--variants: one request per variant, the same frames, each with its prompt and token limit."""
        from ..prompts.caption import render

        hint = (row or {}).get("text", "")
        hint = "" if hint is None or hint != hint else str(hint)
        return [
            CaptionRequest(frames, render(s, hint), is_image, {**meta, "question": s.question, "max_new": limit})
            for s, limit in self.variants
        ]

    def spec(self, is_image: bool):
        return self.image_prompt if (is_image and not self.user_prompt) else self.prompt

    def name(self, is_image: bool) -> str:
        spec = self.spec(is_image)
        return "custom" if spec is None else spec.name

    def __call__(self, row: dict | None, is_image: bool) -> str:
        from ..prompts.caption import render

        spec = self.spec(is_image)
        if spec is None:
            return cast(str, self.custom)  # the custom text is set whenever no spec is
        hint = (row or {}).get("text", "")
        return render(spec, "" if hint is None or hint != hint else str(hint))


def frame_meta(path, frames) -> dict:
    """What a backend may need besides the pixels: where the frames sit in the clip (Qwen2.5-VL's temporal
    positions come from the real spacing of the sampled frames)."""
    return {"path": path, "fps": frames.fps, "indices": list(frames.indices), "total_frames": frames.num_frames}


def frame_rate(preset: Preset, options: CaptionOptions) -> float | None:
    """Frames per second of clip time when frames are sampled by time: --fps, else the preset's (unless
    --num-frames asks for a fixed count); None for a fixed count."""
    if options.max_frames is not None and options.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, not {options.max_frames}.")
    if options.fps is not None:
        if options.fps <= 0:
            raise UsageError(f"--fps must be above 0, not {options.fps}.")
        return float(options.fps)
    rate = preset.params.get("fps")
    if options.max_frames is not None and not rate:
        raise UsageError("--max-frames goes with --fps (frames by time); for a fixed count use --num-frames.")
    return None if options.num_frames is not None or not rate else float(rate)


def _sample_frames():
    """vidcap.frames.sample_frames, imported on first use (PyAV and OpenCV load only where frames are read);
    the import statement costs more than a missing file's whole check when run for every row."""
    global _SAMPLE
    if _SAMPLE is None:
        from ..frames import sample_frames

        _SAMPLE = sample_frames
    return _SAMPLE


_SAMPLE = None


@dataclass
class FrameLoader:
    """Runs in decode workers: picks and decodes the frames (resized there so less data crosses processes)
    and, when the backend can, runs its processor too so the model's process only collates and generates."""

    num_frames: int
    positions: str
    resize: int | None = None
    max_side: int | None = None
    prep: Callable[[CaptionRequest], Any] | None = None  # backend.worker_preprocessor()
    picker: PromptPicker | None = None
    prep_variants: Callable[[list[CaptionRequest]], Any] | None = None  # --variants: a clip's requests -> one item
    rate: float | None = None  # frames by time: this many per second, `num_frames` at most

    @property
    def preload(self) -> tuple[str, ...]:
        """Modules the decode workers' server imports once, so each worker starts warm."""
        return ("torch", "transformers") if self.prep is not None else ()

    def __call__(self, row: dict):
        frames = _sample_frames()(
            row.get(ABSPATH, ""),
            self.num_frames,
            self.positions,
            resize_short=self.resize,
            max_side=self.max_side,
            rate=self.rate,
            span=read_range(row),  # a range row: frames from inside its start_time/end_time only
        )
        if self.prep is None:
            return frames
        picker = cast(PromptPicker, self.picker)
        meta = frame_meta(row.get(ABSPATH), frames)
        if picker.variants and self.prep_variants is not None:
            prepared = self.prep_variants(picker.requests(frames.frames, row, frames.is_image, meta))
        else:
            req = CaptionRequest(
                frames.frames, picker(row, frames.is_image), frames.is_image, {**meta, **picker.meta(frames.is_image)}
            )
            prepared = self.prep(req)
        frames.frames = None  # the pixels travel as model inputs now
        return frames, prepared


# Options that change what a row's result is: in the fingerprint when set, so a resume with other values is
# refused instead of mixing rows made both ways in one output (device, batching and API plumbing are not)
RESULT_OPTIONS = (
    "max_new_tokens",
    "temperature",
    "resize",
    "max_frames",
    "max_pixels",
    "total_pixels",
    "pooling_shape",
    "lora_alpha",
    "dtype",
    "detail",
    "jpeg_quality",
    "heal",
    "max_images",
    "variants",
    "caption_format",
    "schema",
    "constrain",
)


def resolved(options: CaptionOptions, plan: VariantPlan | None, prompt) -> CaptionOptions:
    """The options with what the prompt decides filled in: the token limit (the longest variant's, else the
    prompt's own, else 256) and PLLaVA's user turn; a new value, `options` stays as it was."""
    changes: dict = {}
    if plan:  # the cache is sized for the longest variant; each keeps its own limit
        changes["max_new_tokens"] = max(plan.limits)
    elif options.max_new_tokens is None:  # the seed's limit for this prompt, else 256
        changes["max_new_tokens"] = (prompt.max_new_tokens if prompt else None) or 256
    if options.user_turn is None and prompt is not None:
        changes["user_turn"] = prompt.user_turn
    return replace(options, **changes) if changes else options


class CaptionStage(Stage):
    name = "caption"
    suffix = "caption"
    columns = [
        "text",
        "text_raw",
        "num_frames",
        "fps",
        "width",
        "height",
        "frame_idx",
        "model",
        "prompt",
        "prompt_tokens",
        "completion_tokens",
        "finish_reason",
        "flags",
    ]
    dtypes = {
        **{c: "Int64" for c in ("num_frames", "width", "height", "prompt_tokens", "completion_tokens")},
        "fps": "float64",
        "frame_idx": "list[int64]",
    }

    def __init__(self, preset: Preset, options: CaptionOptions):
        from ..prompts.caption import get_prompt

        self.preset = preset
        self.options = options
        self.plan = VariantPlan.of(options)  # --variants (None without): the first variant is the run's prompt
        # None for a custom prompt text (--prompt-file)
        self.prompt = (
            self.plan.specs[0]
            if self.plan
            else None
            if options.prompt_text is not None
            else get_prompt(options.prompt or preset.prompt or "video")
        )
        self.schema = schema_of(options)  # --caption-format json: each caption checked against it
        if self.schema is not None and self.plan:
            raise UsageError(
                "--variants and --caption-format json do not go together yet (a variant is a prose caption); "
                "write the JSON captions to an output of their own."
            )
        if self.schema is not None and not (self.plan or options.prompt or options.prompt_text):
            self.prompt = schema_prompt(self.schema)  # the schema's fields, asked for as JSON
        options = self.options = resolved(options, self.plan, self.prompt)
        self.backend = make_backend(preset, options)
        self.batch_size = max(1, options.batch_size)
        self.num_frames = preset.num_frames if options.num_frames is None else options.num_frames
        if self.num_frames < 1:
            raise UsageError("--num-frames must be at least 1.")
        self.rate = frame_rate(preset, options)
        if self.rate:  # frames by time: num_frames is the most a clip gives
            self.num_frames = int(options.max_frames or preset.params.get("max_frames") or 768)
        self.user_prompt = bool(options.prompt or options.prompt_text or self.plan)
        if options.prompt_text is not None and not options.prompt_text.strip():
            raise UsageError("the --prompt-file is empty; write the prompt text into it.")
        self.image_prompt = get_prompt("image") if self.schema is None else schema_prompt(self.schema, "image")
        self.picker = PromptPicker(self.prompt, self.image_prompt, options.prompt_text, self.user_prompt)
        if self.plan:
            self.picker.variants = tuple(zip(self.plan.specs, self.plan.limits, strict=True))
            self.columns = [*type(self).columns, *self.plan.columns]
            self.dtypes = {**type(self).dtypes, **self.plan.dtypes}
        from ..checks import CaptionChecker

        self.strip_prefix = options.strip_prefix
        self.checker = CaptionChecker(strip=self.strip_prefix)
        self.heal = max(0, int(options.heal or 0))
        if self.heal:
            self.columns = [*type(self).columns, "heal", "heal_attempts"]
        self._cap_images()

    @property
    def prompt_name(self) -> str:
        return "custom" if self.prompt is None else self.prompt.name

    def fingerprint(self) -> dict:
        fp = {
            "stage": self.name,
            "model": self.backend.model_label(),
            "backend": self.preset.backend,
            "prompt": self.prompt_name,
            "num_frames": self.num_frames,
        }
        if self.rate:
            fp["fps"] = self.rate
        if self.strip_prefix:
            fp["strip_prefix"] = True
        defaults = CaptionOptions()
        for name in RESULT_OPTIONS:  # set away from its default, an option that changes a row's result
            value = getattr(self.options, name)
            if value is not None and value != getattr(defaults, name):
                fp[name] = list(value) if isinstance(value, tuple) else value
        if self.schema is not None:
            fp["schema_sha1"] = self.schema.sha1  # a schema file edited between runs is another result
        if self.options.prompt_text:
            fp["prompt_sha1"] = hashlib.sha1(self.options.prompt_text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        return fp

    def provenance(self) -> dict:
        opts = {k: v for k, v in asdict(self.options).items() if v is not None}
        opts.pop("prompt_text", None)
        opts.pop("base_url", None)  # may hold user:password; the backend's provenance has it cleaned
        return {
            **self.fingerprint(),
            **self.backend.provenance(),
            "options": opts,
            "positions": self.preset.positions,
            "prompt_text": self.prompt_template,
        }

    def loader(self):
        """Called after setup(): the backend knows its model dir, so workers can load its processor."""
        prep = self.backend.worker_preprocessor() if self.options.prepare_on_workers else None
        return FrameLoader(
            self.num_frames,
            self.preset.positions,
            self.options.resize,
            prep=prep,
            picker=self.picker,
            rate=self.rate,
            prep_variants=prep.variants if prep is not None and self.plan else None,
        )

    def resolve(self, device: str | None = None) -> None:
        self.backend.resolve(device or self.options.device)

    def setup(self, device: str | None = None) -> None:
        self.backend.setup(device or self.options.device)

    def check_tp(self, tp: int) -> None:
        self.backend.check_tp(tp)

    def teardown(self) -> None:
        self.backend.teardown()

    @property
    def prompt_template(self) -> str:
        """The prompt as written (a `-text` prompt's `{}` still unfilled: each row fills its own)."""
        return cast(str, self.options.prompt_text) if self.prompt is None else self.prompt.text

    def process_batch(self, items: list[Item]) -> list[dict]:
        self._check_budget()
        split = [it.data if isinstance(it.data, tuple) else (it.data, None) for it in items]
        if self.plan:
            return self._process_variants(items, split)
        reqs: list[CaptionRequest | None] = [None] * len(items)
        if all(prepared is not None for _, prepared in split):
            results = self.backend.caption_prepared([prepared for _, prepared in split])
        else:
            failed = {}
            for i, (it, (fr, _)) in enumerate(zip(items, split, strict=False)):
                try:
                    reqs[i] = self._request(it, fr)
                except VidcapError as exc:  # e.g. a `-text` prompt on a row without text: that row's error
                    failed[i] = CaptionResult(error=exc.text)
            done = iter(self.backend.caption([r for r in reqs if r is not None]) if len(failed) < len(items) else [])
            results = [failed[i] if i in failed else next(done) for i in range(len(items))]
        prompts = [self._prompt_of(it, fr) for it, (fr, _) in zip(items, split, strict=False)]
        rows = [self._row(fr, res, p) for (fr, _), res, p in zip(split, results, prompts, strict=False)]
        return self._heal(items, split, rows, reqs)

    def _heal(self, items: list[Item], split: list, rows: list[dict], reqs: list) -> list[dict]:
        """--heal: rows that loop, came back empty or cut off, or echo the prompt, captioned again (vidcap.heal)."""
        if not self.heal:
            return rows
        from ..heal import heal_rows, reasons_of

        need = [bool(reasons_of(r.get("flags"), r.get("error"))) for r in rows]
        if not any(need):
            return rows
        reqs = list(reqs)
        for i, (it, (fr, _)) in enumerate(zip(items, split, strict=False)):
            if need[i] and reqs[i] is None:
                reqs[i] = self._reload(it, fr)
        frames = {id(req): fr for req, (fr, _) in zip(reqs, split, strict=False)}
        return heal_rows(
            rows,
            reqs,
            self.backend,
            self.heal,
            lambda res, req: self._row(frames[id(req)], res, req.prompt),
            repair=None if self.schema is None else lambda row: repair_row(self.schema, row),
        )

    def _prompt_of(self, item: Item, fr) -> str | None:
        try:
            return self.picker(item.row, fr.is_image)
        except VidcapError:
            return None

    def _cap_images(self) -> None:
        """A provider's per-request image limit caps the frames per clip, with a note saying so."""
        cap = self.backend.max_images()
        if cap is not None and self.num_frames > cap[0]:
            import sys

            print(
                f"vidcap: note: {cap[1]} takes at most {cap[0]} images per request; sending {cap[0]} frames "
                f"per clip instead of {self.num_frames} (set --max-images to change the limit).",
                file=sys.stderr,
            )
            self.num_frames = cap[0]

    def _check_budget(self, at_end: bool = False) -> None:
        """--budget: stop before a batch once a request was refused or not one more fits (finished rows are
        saved); at the end of the run, when a request was refused (its row is left for a higher budget)."""
        stop = budget_stop(self.backend.spend_gate(), at_end=at_end)
        if stop is not None:
            raise stop

    def _reload(self, item: Item, fr) -> CaptionRequest | None:
        """A request for the row: from its frames, or decoded again here when the decode workers sent model
        inputs instead of pixels. None when that fails (the row keeps its first caption)."""
        try:
            if getattr(fr, "frames", None) is None:
                fr = FrameLoader(self.num_frames, self.preset.positions, self.options.resize, rate=self.rate)(item.row)
            return self._request(item, fr)
        except VidcapError:
            return None

    def streams(self) -> bool:
        """True when the backend takes clips one by one as they come (continuous batching)."""
        return self.backend.engine() is not None

    def process_stream(self, source) -> Iterator[tuple[Item, dict]]:
        """(item, output row) in the order captions finish; `source` is a vidcap.rows.RowSource of Items.
        Each item comes back exactly once."""
        stream = _StreamSource(source, self)
        for key, res in self.backend.caption_stream(stream):
            item, fr = stream.held.pop(key)
            if isinstance(res, list):  # --variants: one result per variant
                yield item, self._variant_row(item, fr, res)
                yield from stream.drain_errors()
                continue
            row = self._row(fr, res, self._prompt_of(item, fr))
            yield item, self._heal([item], [(fr, None)], [row], [None])[0]
            yield from stream.drain_errors()
        yield from stream.drain_errors()

    def _request(self, item: Item, fr) -> CaptionRequest:
        meta = {**frame_meta(item.row.get(ABSPATH), fr), **self.picker.meta(fr.is_image)}
        return CaptionRequest(fr.frames, self.picker(item.row, fr.is_image), fr.is_image, meta)

    def _requests(self, item: Item, fr) -> list[CaptionRequest]:
        """--variants: the row's requests, one per variant (raises VidcapError like `_request`)."""
        return self.picker.requests(fr.frames, item.row, fr.is_image, frame_meta(item.row.get(ABSPATH), fr))

    def _prepare(self, item: Item, fr):
        """The row's model inputs made here (the decode workers only decoded): a family item with --variants."""
        if self.plan:
            return self.backend.prepare_variants(self._requests(item, fr))
        return self.backend.prepare_item(self._request(item, fr))

    def _process_variants(self, items: list[Item], split: list) -> list[dict]:
        if all(prepared is not None for _, prepared in split):
            results = self.backend.caption_prepared([prepared for _, prepared in split])
        else:
            groups: list = []
            for it, (fr, _) in zip(items, split, strict=True):
                try:
                    groups.append(self._requests(it, fr))
                except VidcapError as exc:  # a `-text` prompt on a row without text: the row's error
                    groups.append(exc)
            done = iter(self.backend.caption_variants([g for g in groups if not isinstance(g, VidcapError)]))
            results = [
                [CaptionResult(error=g.text)] * len(self.picker.variants) if isinstance(g, VidcapError) else next(done)
                for g in groups
            ]
        return [self._variant_row(it, fr, res) for it, (fr, _), res in zip(items, split, results, strict=True)]

    def _variant_row(self, item: Item, fr, results: list) -> dict:
        """The output row of a clip captioned with --variants (see stages.caption_variants)."""
        try:
            prompts: list = [r.prompt for r in self._requests(item, fr)]
        except VidcapError:
            prompts = [None] * len(results)
        plan = cast(VariantPlan, self.plan)
        return plan.row([self._row(fr, r, p) for r, p in zip(results, prompts, strict=True)])

    def _row(self, fr, res, prompt: str | None = None) -> dict:
        from ..checks import REPLACED, join_flags, parse_flags
        from ..heal import ECHO, echoes_prompt
        from ..manifest import clean_text

        clean = clean_text(res.text)  # lone surrogates cannot be stored: replaced, and the row flagged
        text, flags = self.checker.check(clean, res.finish_reason, res.error)
        if (clean is not res.text or "\ufffd" in (clean or "")) and not res.error:  # replaced here or by the model
            flags = f"{flags},{REPLACED}" if flags else REPLACED
        if not res.error and echoes_prompt(text, prompt):
            flags = join_flags(parse_flags(flags) + [ECHO])
        error = res.error
        if self.schema is not None and not error:  # invalid JSON is kept as it came, with a `parse` error
            text, error, flags = json_caption(self.schema, clean, flags, self.checker)
        raw = res.raw_text if res.raw_text and res.raw_text != text else ""
        return {
            "text": text,
            "text_raw": raw,
            "num_frames": fr.num_frames,
            "fps": fr.fps,
            "width": fr.width,
            "height": fr.height,
            "frame_idx": list(fr.indices),
            "model": self.backend.model_label(),
            "prompt": self.picker.name(fr.is_image),
            "prompt_tokens": res.prompt_tokens,
            "completion_tokens": res.completion_tokens,
            "finish_reason": res.finish_reason,
            "flags": flags,
            "error": error,
        }

    def finish(self, results: ResultTable) -> dict:
        """Run-level work over every result row: exact (`duplicate` flag) and near-duplicate captions among the
        ok rows (clustered in row-id order, so two runs over the same rows number the clusters alike), the
        rows per flag, and the --heal counts."""
        results.fill_null("flags", "")  # flags are text, "" for none (a failed row's too)
        ok = results.read(["text", "flags"], "status = 'ok'").to_pandas()
        ok = add_duplicate_flags(ok.sort_values(RID, kind="stable").reset_index(drop=True).assign(status="ok"))
        ok, clusters = add_near_dup_columns(ok)
        types = {RID: pa.string(), "flags": pa.string(), "near_dup_cluster": pa.int64(), "near_dup_size": pa.int64()}
        cols = [RID, "flags", *(["near_dup_cluster", "near_dup_size"] if clusters is not None else [])]
        schema = pa.schema([(c, types[c]) for c in cols])  # typed even with no ok row: one schema whatever failed
        results.update(pa.Table.from_pandas(ok[cols], schema=schema, preserve_index=False))
        others = results.read(["flags"], "status IS DISTINCT FROM 'ok' AND coalesce(flags, '') <> ''").to_pandas()
        extra: dict = {"flags": flag_counts(pd.concat([ok[["flags"]], others[["flags"]]]))}
        if clusters is not None:
            extra["near_dup"] = clusters
        if self.heal:
            extra["heal"] = {k: results.count(f"heal = '{k}'") for k in ("healed", "unhealed")}
        return extra

    cost_estimate: dict | None = None  # vidcap.budget's estimate, when the CLI printed one

    def summary_extra(self) -> dict:
        self._check_budget(at_end=True)  # before the merge: rows the budget held back keep the output unfinished
        extra = self.backend.usage_summary()
        gate = self.backend.spend_gate()
        if gate is not None and extra.get("cost_usd") is not None:
            extra["cost_usd_output"] = round(gate.total, 6)  # every run that wrote this output, this one included
            if gate.ceiling is not None:
                extra["budget_usd"] = gate.ceiling
        if self.cost_estimate is not None:
            extra["estimate"] = {k: self.cost_estimate[k] for k in ("prompt_tokens", "completion_tokens", "cost_usd")}
        engine = self.backend.engine_summary()
        if engine is not None:
            extra["engine"] = engine
            extra["fast_path"] = bool(engine["fast_path"])
            if not extra["fast_path"] and self.options.engine:
                from ..backends.hf_common import warn

                warn(f"this run's fast path did not engage: {extra['engine']['fast_path_reason']}.")
        return extra


class _StreamSource:
    """Items from the runner as (key, model inputs) for the backend's stream: the decode workers'
    prepared inputs, or inputs prepared here when the workers only decoded. A row the processor
    rejects is that row's error (handed back by `drain_errors`)."""

    def __init__(self, source, stage: CaptionStage):
        self.source, self.stage = source, stage
        self.held: dict = {}
        self.errors: list = []
        self.next_key = 0

    def take(self, n: int, timeout: float = 0.0):
        from ..errors import MODEL, format_error

        got = self.source.take(n, timeout)
        if got is None:
            return None
        pairs = []
        for item in got:
            fr, prepared = item.data if isinstance(item.data, tuple) else (item.data, None)
            if prepared is None:
                try:
                    prepared = self.stage._prepare(item, fr)
                except (UsageError, KeyboardInterrupt):
                    raise
                except VidcapError as exc:
                    self.errors.append((item, self.stage._row(fr, CaptionResult(error=exc.text))))
                    continue
                except Exception as exc:
                    self.errors.append((item, {"error": format_error(MODEL, f"{type(exc).__name__}: {exc}")}))
                    continue
            key = self.next_key
            self.next_key += 1
            self.held[key] = (item, fr)
            pairs.append((key, prepared))
        return pairs

    def drain_errors(self):
        errors, self.errors = self.errors, []
        yield from errors
