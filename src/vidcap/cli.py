"""Thin commands: parse options, build the stage and run options, call the library, print a summary."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .clihelp import classic_help
from .config import Execution, RunConfig, RunScope, Tuning, default_batch_size, default_workers, parse_shard
from .console import protect_stderr
from .errors import UsageError

classic_help()
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="vidcap: captions, camera motion and tags for large video collections.",
)
dev_app = typer.Typer(no_args_is_help=True, help="Developer tools (tiny models for smoke tests).")


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"vidcap {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print vidcap's version and exit."
    ),
) -> None:
    """Captions, camera-motion labels and tags for large video collections."""


app.add_typer(dev_app, name="dev")

# Options shared by every run command.
O_OUT = typer.Option(
    None,
    "-o",
    "--output",
    help="Output file (.csv or .parquet), a local path or an fsspec URL (s3://...), or a local folder (a path with no extension, e.g. captions/) for a Parquet dataset of 1M-row files; default <stem>_<command> beside the manifest.",
)
O_WORKERS = typer.Option(None, "--workers", help="Decode worker processes (default: CPU count - 1; 0 = in-process).")
O_LIMIT = typer.Option(None, "--limit", help="Only the first N rows.")
O_SHARD = typer.Option(None, "--shard", help="I/N: every N-th row starting at row I, for hand-made sharding.")
O_OVERWRITE = typer.Option(False, "--overwrite", help="Start over: discard saved parts and replace the output.")
O_KEEP = typer.Option(False, "--keep-parts", help="Keep the <output>.parts folder after the merge.")
O_FAILED = typer.Option(None, "--failed-out", help="Write failed rows to this file and only ok rows to the output.")
O_TAG_WORKERS = typer.Option(
    None, "--workers", help="Processes that read the captions (default: 0 = in-process; tagging decodes no video)."
)
O_PART_ROWS = typer.Option(
    None,
    "--part-rows",
    help="Rows per part file (smaller = less redone after a crash). Default: 256 rows, or more when rows come faster than a part a second (at most 64k).",
)
O_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")
O_DEVICE = typer.Option(None, "--device", help="Torch device (default: cuda if available, else cpu).")
O_GPUS = typer.Option(None, "--gpus", help="all, N or a list like 0,1,3: one worker per GPU (cpu:N: N CPU workers).")
O_TP = typer.Option(1, "--tp", help="Tensor-parallel GPUs per worker.")
O_ENGINE = typer.Option("local", "--engine", help="local or ray.")
O_ADDRESS = typer.Option(None, "--address", help="Ray cluster address (HOST:PORT or auto); with --engine ray.")
O_RAY_ENV = typer.Option(
    None,
    "--ray-env",
    help="With --engine ray: pass this environment variable to the actors (repeat the flag; VIDCAP_* and HF_* go anyway; values are never printed).",
)
O_RAY_ACTORS = typer.Option(
    None,
    "--ray-actors",
    help="With --engine ray: at most this many actors (default: one per GPU, or per 2 CPUs on a CPU cluster).",
)
O_NO_FILE_CHECK = typer.Option(
    False,
    "--no-file-check",
    help="On resume, skip checking each done row's file size and mtime (a changed file is otherwise redone).",
)
O_RETRY_FAILED = typer.Option(
    False,
    "--retry-failed",
    help="Redo every failed row of an earlier run of this output (not only timeouts and API errors); ok rows stay as they are.",
)


O_BATCH = typer.Option(
    None,
    "--batch-size",
    "-b",
    help="Rows the model works on at once: an in-process model decodes this many together (the engine's slots), an API backend gets this many requests at a time (--concurrency of them in flight). Default: 64 for an in-process model on a GPU, else 8; over an API, 4 x --concurrency.",
)

# Options of the models: in-process (transformers) and API (OpenAI-compatible), shared by caption, tag, summarize.
O_DTYPE = typer.Option(None, "--dtype", help="bfloat16, float16 or float32 (default: bfloat16 on GPU, float32 on CPU).")
O_TRUST_REMOTE_CODE = typer.Option(False, "--trust-remote-code", help="Allow model repos to run their own code.")
O_API_KEY_ENV = typer.Option(
    "OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key (API backends)."
)
O_CONCURRENCY = typer.Option(16, "--concurrency", help="API requests in flight.")
O_MAX_RETRIES = typer.Option(
    5, "--max-retries", help="API attempts after the first before a row fails (429s and 5xx back off)."
)
O_TIMEOUT = typer.Option(60.0, "--timeout", help="API request timeout, seconds.")
O_PRICE_IN = typer.Option(None, "--price-in", help="USD per million prompt tokens (for the cost line).")
O_PRICE_OUT = typer.Option(None, "--price-out", help="USD per million completion tokens.")


def run_config(
    *,
    workers: int | None = None,
    limit: int | None = None,
    shard: str | None = None,
    overwrite: bool = False,
    keep_parts: bool = False,
    part_rows: int | None = None,
    quiet: bool = False,
    device: str | None = None,
    failed_out: str | None = None,
    no_file_check: bool = False,
    retry_failed: bool = False,
    gpus: str | None = None,
    tp: int = 1,
    engine: str = "local",
    address: str | None = None,
    ray_env: list[str] | None = None,
    ray_actors: int | None = None,
) -> RunConfig:
    """The run's settings from a command's flags, built once; nothing changes them afterwards."""
    if limit is not None and limit < 0:
        raise UsageError(f"--limit must be 0 or more, not {limit}.")
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be 0 (decode in this process) or more, not {workers}.")
    return RunConfig(
        RunScope(
            limit=limit,
            shard=parse_shard(shard),
            overwrite=overwrite,
            keep_parts=keep_parts,
            failed_out=failed_out,
            check_files=not no_file_check,
            retry_failed=retry_failed,
        ),
        Execution(
            workers=workers,
            device=device,
            progress=not quiet,
            executor=engine,
            gpus=gpus,
            tp=tp,
            address=address,
            ray_env=tuple(ray_env or ()),
            ray_actors=ray_actors,
        ),
        Tuning(part_rows=None if part_rows is None else max(1, part_rows)),
    )


VIDEO_SUFFIXES = {
    ".mp4",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".flv",
    ".wmv",
    ".3gp",
    ".gif",
    ".ogv",
    ".vob",
    ".mxf",
}


def check_manifest_name(manifest) -> None:
    """A video or image given where the manifest goes gets the one sentence that says how to list it."""
    from .frames.images import IMAGE_EXTENSIONS
    from .manifest import FORMATS

    suffix = Path(str(manifest)).suffix.lower()
    if suffix in FORMATS:
        return
    from .dataset import MARKER

    folder = Path(str(manifest))
    if folder.is_dir() and ((folder / MARKER).exists() or any(folder.glob("*.parquet"))):
        return  # a dataset folder vidcap wrote (one without its marker is refused when read, in one sentence)
    if folder.is_dir():
        raise UsageError(
            f"{manifest} is a folder, not a manifest; list its clips in a CSV with a `path` column, "
            f"e.g.: (echo path; find {manifest} -name '*.mp4') > clips.csv"
        )
    kind = "a video" if suffix in VIDEO_SUFFIXES else "an image" if suffix in IMAGE_EXTENSIONS else None
    if kind:
        raise UsageError(
            f"{manifest} is {kind}, not a manifest; list your clips in a CSV with a `path` column "
            f"(one file per row), e.g.: printf 'path\\n{manifest}\\n' > clips.csv"
        )
    raise UsageError(
        f"{manifest} has extension '{suffix or '(none)'}'; the manifest must be a .csv or .parquet "
        "table with a `path` column (one video per row)."
    )


def output_path(manifest: str | Path, output: str | None, suffix: str):
    from .manifest import default_output, table_format
    from .storage import as_path

    check_manifest_name(manifest)
    out = as_path(output) if output else default_output(manifest, suffix)
    table_format(out)
    return out


def print_summary(summary: dict, output: Path) -> None:
    from rich.console import Console

    con = Console(stderr=True, soft_wrap=True)
    failed = summary.get("failed", {})
    nfail = sum(failed.values())
    con.print(
        f"[bold]done[/]: {summary.get('unique', summary['ok'] + nfail)} clips: {summary['ok']} ok, {nfail} failed"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(failed.items()))})" if nfail else "")
        + f", {summary['skipped']} skipped (already done), {summary['duplicates']} duplicate rows"
    )
    con.print(
        f"processed {summary['processed']} rows in {summary['wall_s']:.1f} s ({summary['rows_per_s']:.2f} rows/s)"
    )
    from .summary import extra_lines

    for line in extra_lines(summary):
        con.print(line, markup=False, highlight=False)
    con.print(f"output: {output}")
    from .dataset import HINT_ROWS
    from .manifest import table_format

    if summary.get("rows", 0) >= HINT_ROWS and "://" not in str(output) and table_format(output) != "dataset":
        name = str(output).rsplit(".", 1)[0]
        con.print(
            f"hint: an output this large is easier to read and copy as a Parquet dataset folder: -o {name}/",
            markup=False,
            highlight=False,
        )


def exit_if_all_failed(summary: dict) -> None:
    """A run whose every row failed exits 1 (the output still lists each row's error). A torchrun rank that
    does not merge (its summary names its `share`) exits 0 whatever its share gave: torchrun ends every rank
    when one exits non-zero, which would stop rank 0 before or during the merge; rank 0's exit decides."""
    if "share" in summary:
        return
    nfail = sum(summary.get("failed", {}).values())
    if summary.get("ok", 0) == 0 and nfail:
        typer.echo(f"vidcap: every row failed ({nfail}); the output lists each row's error.", err=True)
        raise typer.Exit(1)


def execute(stage, manifest: str | Path, out: Path, config: RunConfig, checked=False) -> dict:
    """Every run command ends here: one dispatch picks the executor (one process, GPUs of a host, torchrun,
    Ray) for any stage, as `config.execution` says. `checked`: the caller already ran vidcap.preflight.check."""
    from .preflight import check
    from .runner import run

    if not checked:
        check(stage, manifest, out, config.executor)  # missing packages: one sentence before any part exists

    summary = run(stage, manifest, out, config)
    print_summary(summary, out)
    exit_if_all_failed(summary)
    return summary


@app.command()
def caption(
    manifest: str = typer.Argument(..., help="CSV or Parquet with a `path` column (a path or an fsspec URL)."),
    output: str | None = O_OUT,
    model: str | None = typer.Option(
        None, "--model", "-m", help="Preset name (see `vidcap models`), local dir or Hugging Face id."
    ),
    backend: str | None = typer.Option(
        None, "--backend", help="Force a backend: hf-vlm, hf-llava, hf-pllava, openai, fake."
    ),
    batch_size: int | None = O_BATCH,
    num_frames: int | None = typer.Option(None, "--num-frames", "-n", help="Frames per clip (default: the preset's)."),
    fps: float | None = typer.Option(
        None, "--fps", help="Frames by time: this many per second of each clip (Qwen3-VL presets: 2), evenly spread."
    ),
    max_frames: int | None = typer.Option(
        None, "--max-frames", help="With --fps: the most frames one clip gives (default: the preset's, else 768)."
    ),
    total_pixels: int | None = typer.Option(
        None, "--total-pixels", help="Pixel budget per clip, all frames together (Qwen-VL)."
    ),
    prompt: str | None = typer.Option(None, "--prompt", help="Prompt name from the prompt table."),
    prompt_file: Path | None = typer.Option(None, "--prompt-file", help="A file holding a custom prompt."),
    variants: str | None = typer.Option(
        None,
        "--variants",
        help="Several captions per clip, one per prompt name (e.g. short,dense), each in its own caption_<name> column; `text` holds the first. In-process models encode the clip once and share it.",
    ),
    max_new_tokens: int | None = typer.Option(
        None,
        "--max-new-tokens",
        help="Caption length limit in tokens (default: the prompt's own, 128 for Open-Sora v1.3's short PLLaVA prompts; else 256).",
    ),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    resize: int | None = typer.Option(
        None, "--resize", help="Resize frames so the short side is this many pixels (on the decode workers)."
    ),
    pooling_shape: str | None = typer.Option(None, "--pooling-shape", help="PLLaVA pooling T-H-W (seed: 4-12-12)."),
    lora_alpha: float | None = typer.Option(None, "--lora-alpha", help="PLLaVA LoRA alpha (seed: 4)."),
    max_pixels: int | None = typer.Option(None, "--max-pixels", help="Pixel budget per frame (Qwen-VL)."),
    trust_remote_code: bool = O_TRUST_REMOTE_CODE,
    dtype: str | None = O_DTYPE,
    base_url: str | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible server URL (e.g. http://localhost:8000/v1)."
    ),
    api_key_env: str = O_API_KEY_ENV,
    concurrency: int = O_CONCURRENCY,
    max_retries: int = O_MAX_RETRIES,
    timeout: float = O_TIMEOUT,
    detail: str = typer.Option("auto", "--detail", help="API image detail: low, high or auto."),
    price_in: float | None = O_PRICE_IN,
    price_out: float | None = O_PRICE_OUT,
    gpus: str | None = O_GPUS,
    tp: int = O_TP,
    engine: str = O_ENGINE,
    address: str | None = O_ADDRESS,
    ray_env: list[str] | None = O_RAY_ENV,
    ray_actors: int | None = O_RAY_ACTORS,
    no_file_check: bool = O_NO_FILE_CHECK,
    strip_prefix: bool = typer.Option(
        False,
        "--strip-prefix",
        help="Drop stock openings like 'The video shows' (Open-Sora's list) and capitalise the rest.",
    ),
    heal: int = typer.Option(
        0,
        "--heal",
        metavar="N",
        help="Caption a row again, up to N times, when its caption loops, is empty, was cut off or echoes the prompt: that row alone gets a repetition penalty, then seeded sampling. Good rows are never touched; every attempt is kept in heal_attempts.",
    ),
    caption_format: str = typer.Option(
        "text",
        "--caption-format",
        help="text, or json: structured captions following --schema (checked against it; in-process models decode constrained to it, servers get response_format).",
    ),
    schema: str | None = typer.Option(
        None,
        "--schema",
        metavar="NAME|FILE",
        help="With --caption-format json: a built-in schema (hunyuan, cosmos, opensora) or a JSON Schema file.",
    ),
    constrain: bool = typer.Option(
        True,
        "--constrain/--no-constrain",
        help="With --caption-format json: in-process models decode masked to the schema (--no-constrain: only check the captions afterwards).",
    ),
    budget: float | None = typer.Option(
        None,
        "--budget",
        metavar="USD",
        help="API runs: the most this output may cost in dollars, over every run that writes it (kept in <output>.spend.json). A request that could pass it is not sent; the run stops with exit 3, finished rows saved; rerun with a higher budget to go on.",
    ),
    max_images: int | None = typer.Option(
        None,
        "--max-images",
        help="API runs: images one request may carry (default: the provider's known limit); clips get at most this many frames.",
    ),
    window: str | None = typer.Option(
        None,
        "--window",
        help="Caption long videos window by window: SECONDS (e.g. 10s) or scenes (shot boundaries); one output row per window with its start_time/end_time (the windows are kept in <output>.windows.parquet).",
    ),
    summary: bool = typer.Option(
        False,
        "--summary",
        help="With --window: also summarise each video from its window captions with a text LLM, into <output>.summary.<ext> (one row per video).",
    ),
    summary_backend: str = typer.Option(
        "hf", "--summary-backend", help="hf, openai or fake: the --summary model's backend."
    ),
    summary_model: str | None = typer.Option(
        None,
        "--summary-model",
        help="The --summary chat model id or local dir (default: the backend's, as for `vidcap tag`).",
    ),
    retry_failed: bool = O_RETRY_FAILED,
    workers: int | None = O_WORKERS,
    limit: int | None = O_LIMIT,
    shard: str | None = O_SHARD,
    overwrite: bool = O_OVERWRITE,
    keep_parts: bool = O_KEEP,
    part_rows: int | None = O_PART_ROWS,
    failed_out: str | None = O_FAILED,
    quiet: bool = O_QUIET,
    device: str | None = O_DEVICE,
):
    """Caption every clip of MANIFEST with a vision-language model (in-process or over an API)."""
    from .backends.base import CaptionOptions
    from .backends.presets import DEFAULT_MODEL
    from .backends.registry import resolve_model
    from .stages.caption import CaptionStage
    from .stages.caption_variants import parse_variants

    if detail not in ("low", "high", "auto"):
        raise UsageError(f"--detail must be low, high or auto, not '{detail}'.")
    if model is None:
        model = "gpt-4o" if backend == "openai" else DEFAULT_MODEL
    preset = resolve_model(model, backend)
    prompt_text = None
    if prompt_file is not None:
        if not prompt_file.is_file():
            raise UsageError(f"--prompt-file {prompt_file} does not exist.")
        prompt_text = prompt_file.read_text(encoding="utf-8")
    opts = CaptionOptions(
        num_frames=num_frames,
        fps=fps,
        max_frames=max_frames,
        total_pixels=total_pixels,
        prompt=prompt,
        prompt_text=prompt_text,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size or default_batch_size(preset.backend, device, concurrency),
        resize=resize,
        device=device,
        pooling_shape=_pooling(pooling_shape),
        lora_alpha=lora_alpha,
        max_pixels=max_pixels,
        trust_remote_code=trust_remote_code,
        dtype=dtype,
        base_url=base_url,
        api_key_env=api_key_env,
        concurrency=concurrency,
        max_retries=max_retries,
        timeout=timeout,
        detail=detail,
        price_in=price_in,
        price_out=price_out,
        strip_prefix=strip_prefix,
        heal=_at_least(heal, 0, "--heal"),
        **_format_options(caption_format, schema, constrain),
        budget=budget,
        max_images=_at_least(max_images, 1, "--max-images"),
        variants=parse_variants(variants),
    )
    if budget is not None and budget <= 0:
        raise UsageError(f"--budget must be more than 0 dollars, not {budget}.")
    stage = CaptionStage(preset, opts)
    out = output_path(manifest, output, "caption")
    ropts = run_config(
        workers=workers,
        limit=limit,
        shard=shard,
        overwrite=overwrite,
        keep_parts=keep_parts,
        part_rows=part_rows,
        quiet=quiet,
        device=device,
        failed_out=failed_out,
        no_file_check=no_file_check,
        retry_failed=retry_failed,
        gpus=gpus,
        tp=tp,
        engine=engine,
        address=address,
        ray_env=ray_env,
        ray_actors=ray_actors,
    )
    if summary and not window:
        raise UsageError("--summary summarises the window captions of a video; add --window 10s (or --window scenes).")
    if window:
        manifest, ropts = _caption_windows(manifest, out, window, ropts)
    from .budget import attach_spend, print_estimate
    from .preflight import check

    check(stage, manifest, out, engine)  # missing packages: one sentence before the estimate probes a clip
    attach_spend(stage, out)  # what this output cost before, and the --budget gate every request asks
    print_estimate(stage, manifest, ropts)
    execute(stage, manifest, out, ropts, checked=True)
    if summary:
        summarize_windows(
            out,
            _beside(out, "summary"),
            backend=summary_backend,
            model=summary_model,
            ropts=run_config(workers=0, overwrite=overwrite, quiet=quiet, device=device),
            base_url=base_url,
            api_key_env=api_key_env,
        )


def _beside(out, name: str):
    """<output>.<name>.<output's extension>: a table that goes with the output (a dataset folder: .parquet)."""
    from .manifest import table_format
    from .storage import as_path

    ext = "csv" if table_format(out) == "csv" else "parquet"
    return as_path(f"{out}.{name}.{ext}")


def _caption_windows(manifest, out, window: str, ropts):
    """--window: split each video into windows (or shots) with the scenes stage into <output>.windows.parquet
    (resumable like any output), and return the manifest of its range rows to caption, with the run options
    for that (--limit and --shard chose the videos; --failed-out is for the captions)."""
    import dataclasses

    from .scenes import SceneOptions, parse_seconds
    from .stages.scenes import ScenesStage, window_rows
    from .storage import as_path

    if window.strip().lower() == "scenes":
        opts = SceneOptions()
    else:
        size = parse_seconds(window, "--window")
        opts = SceneOptions(window=size, min_len=size / 2)  # a tail under half a window joins the one before
    table = as_path(f"{out}.windows.parquet")
    execute(
        ScenesStage(opts),
        manifest,
        table,
        dataclasses.replace(ropts, failed_out=None, execution=ropts.execution.here()),
    )
    rows = as_path(f"{out}.windows-rows.parquet")
    window_rows(table, rows)
    return str(rows), dataclasses.replace(ropts, limit=None, shard=None)


def _bench_window(window: str | None, seconds: float) -> float | None:
    """bench --window: a length that fits at least twice into --seconds."""
    if not window:
        return None
    from .scenes import parse_seconds

    size = parse_seconds(window, "--window")
    if size * 2 > seconds:
        raise UsageError(f"bench --window {size:g} needs --seconds of at least {2 * size:g} (the long videos' length).")
    return size


def _format_options(caption_format: str, schema: str | None, constrain: bool = True) -> dict:
    """--caption-format and --schema as caption options (a schema goes with json, and json needs one)."""
    if caption_format not in ("text", "json"):
        raise UsageError(f"--caption-format must be text or json, not '{caption_format}'.")
    if caption_format == "json" and not schema:
        raise UsageError("--caption-format json needs --schema: hunyuan, cosmos, opensora or a JSON Schema file.")
    if schema and caption_format != "json":
        raise UsageError("--schema goes with --caption-format json.")
    if not constrain and caption_format != "json":
        raise UsageError("--no-constrain goes with --caption-format json.")
    if caption_format != "json":
        return {}
    return {"caption_format": "json", "schema": schema, **({} if constrain else {"constrain": False})}


def _at_least(value, low: int, flag: str):
    if value is not None and value < low:
        raise UsageError(f"{flag} must be at least {low}, not {value}.")
    return value


def _pooling(text: str | None):
    if not text:
        return None
    try:
        t, h, w = (int(x) for x in text.split("-"))
    except ValueError:
        raise UsageError(f"--pooling-shape '{text}' is not T-H-W, e.g. 4-12-12.") from None
    return (t, h, w)


@app.command()
def models():
    """List the model presets (names for --model)."""
    import shutil
    import textwrap

    from .backends.presets import DEFAULT_MODEL
    from .backends.registry import PRESETS

    # Two lines per preset, never cut: a user copies the names and ids from here at any terminal width.
    width = max(40, min(shutil.get_terminal_size((100, 24)).columns, 120))
    rows = [
        (p.name + (" (default)" if p.name == DEFAULT_MODEL else ""), p.backend, p.model_id or "-")
        for p in PRESETS.values()
    ]
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    typer.echo(f"{'preset':<{w0}}  {'backend':<{w1}}  model")
    for p, (name, backend, model_id) in zip(PRESETS.values(), rows, strict=False):
        typer.echo(f"{name:<{w0}}  {backend:<{w1}}  {model_id}")
        frames = f"{p.num_frames} frame{'' if p.num_frames == 1 else 's'}"
        about = f"{frames} ({p.positions}), prompt {p.prompt or '-'}; {p.description}"
        typer.echo(textwrap.fill(about, width - 1, initial_indent="    ", subsequent_indent="    "))


@app.command()
def merge(
    parts: list[str] = typer.Argument(..., help="Part files to concatenate (paths or fsspec URLs)."),
    output: str = typer.Option(
        ..., "-o", "--output", help="The merged table (.csv or .parquet, a path or an fsspec URL)."
    ),
):
    """Concatenate part files (later files win on duplicate paths); `vidcap join` puts stage outputs side by side."""
    from .table_ops import merge as merge_tables

    n, dropped = merge_tables(parts, output)
    extra = f" ({dropped} rows dropped: a later file had the same path)" if dropped else ""
    typer.echo(f"wrote {n} rows to {output}{extra}")


@app.command()
def join(
    tables: list[str] = typer.Argument(
        ..., help="Stage outputs (or any tables with a `path` column) to put side by side."
    ),
    output: str = typer.Option(..., "-o", "--output", help="The joined table (.csv or .parquet)."),
    on: str | None = typer.Option(None, "--on", help="Join on this column instead of the resolved path."),
):
    """One row per clip with the columns of every input (caption + motion + tags ...), matched by resolved path."""
    from .join import describe, join_tables

    counts = join_tables(tables, output, on)
    typer.echo(describe(tables, counts, output))


@app.command()
def export(
    tables: list[str] = typer.Argument(
        ..., help="A caption output, or it with motion and tag outputs (joined by resolved path)."
    ),
    to: str = typer.Option(..., "--to", help="The target: opensora (Open-Sora v1.2.0's datautil and training loader)."),
    output: str = typer.Option(..., "-o", "--output", help="The table to write (.csv)."),
    excluded: str | None = typer.Option(
        None, "--excluded", help="Where rows left out go, with the reason (default <output stem>_excluded.csv)."
    ),
    unclassified: str = typer.Option(
        "drop",
        "--unclassified",
        help="Rows whose camera motion is unclassified: drop (to the excluded file) or static.",
    ),
    rotated: str = typer.Option(
        "drop",
        "--rotated",
        help="Clips shown turned (phone rotation, EXIF): drop (to the excluded file) or keep (sizes as stored, which Open-Sora trains on).",
    ),
    text_column: str | None = typer.Option(
        None,
        "--text-column",
        help="The caption Open-Sora trains on: a column (e.g. a variant) or a JSON caption's field, COLUMN.FIELD.",
    ),
    clips: str | None = typer.Option(
        None,
        "--clips",
        help="Where range rows (start_time/end_time) are cut into clips (default <output stem>_clips/).",
    ),
    workers: int = typer.Option(1, "--workers", help="Processes cutting range rows into clips."),
):
    """One table a training framework takes as it is: ok rows only, absolute paths, integer sizes."""
    from .export import describe, export_opensora

    if to != "opensora":
        raise UsageError(f"--to {to} is not a known target; the one there is: opensora.")
    counts = export_opensora(
        tables, output, excluded, unclassified, rotated, text_column=text_column, clips=clips, workers=workers
    )
    typer.echo(describe(counts, output))
    if counts["rows"] == 0:
        typer.echo(f"vidcap: no row could be exported; {counts['excluded_path']} says why for each.", err=True)
        raise typer.Exit(1)


@app.command()
def diff(
    a: str = typer.Argument(..., help="The table to take rows from (e.g. the manifest)."),
    b: str = typer.Argument(..., help="The table whose clips to leave out (e.g. an output)."),
    output: str = typer.Option(..., "-o", "--output", help="Where to write the rows left (.csv or .parquet)."),
):
    """Rows of A whose clip is not in B, comparing resolved paths (what is left to do)."""
    from .table_ops import diff as diff_tables

    n = diff_tables(a, b, output)
    typer.echo(f"wrote {n} rows to {output}")


@app.command()
def motion(
    manifest: str | None = typer.Argument(None, help="CSV or Parquet with a `path` column (a path or an fsspec URL)."),
    output: str | None = O_OUT,
    threshold: float = typer.Option(
        0.25, "--threshold", help="Fraction of the frame a move must pass to count (0.2 = 20%)."
    ),
    eval_labels: Path | None = typer.Option(
        None, "--eval", help="A CSV with path,label columns: print accuracy and a confusion table instead."
    ),
    workers: int | None = O_WORKERS,
    limit: int | None = O_LIMIT,
    shard: str | None = O_SHARD,
    overwrite: bool = O_OVERWRITE,
    keep_parts: bool = O_KEEP,
    part_rows: int | None = O_PART_ROWS,
    failed_out: str | None = O_FAILED,
    quiet: bool = O_QUIET,
    gpus: str | None = O_GPUS,
    engine: str = O_ENGINE,
    address: str | None = O_ADDRESS,
    ray_env: list[str] | None = O_RAY_ENV,
    ray_actors: int | None = O_RAY_ACTORS,
    no_file_check: bool = O_NO_FILE_CHECK,
):
    """Label each clip's camera motion (pan, tilt, zoom, static, unclassified) from optical flow."""
    if manifest is not None and eval_labels is None and workers != 0 and engine == "local" and gpus is None:
        from .feeder import prestart
        from .motion.loader import MotionLoader

        prestart(MotionLoader)  # the decode workers' server imports while this process imports pandas and plans
    from .stages.motion import MotionStage

    stage = MotionStage(threshold=threshold)
    if eval_labels is not None:
        from .motion import run_eval

        typer.echo(run_eval(str(eval_labels), threshold, workers or default_workers(stage)))
        return
    if manifest is None:
        raise UsageError("give a MANIFEST to label, or --eval LABELS.csv to measure accuracy.")
    out = output_path(manifest, output, stage.suffix)
    ropts = run_config(
        workers=workers,
        limit=limit,
        shard=shard,
        overwrite=overwrite,
        keep_parts=keep_parts,
        part_rows=part_rows,
        quiet=quiet,
        failed_out=failed_out,
        no_file_check=no_file_check,
        gpus=gpus,
        engine=engine,
        address=address,
        ray_env=ray_env,
        ray_actors=ray_actors,
    )
    execute(stage, manifest, out, ropts)


@app.command()
def scenes(
    manifest: str = typer.Argument(..., help="CSV or Parquet with a `path` column (a path or an fsspec URL)."),
    output: str | None = O_OUT,
    detector: str = typer.Option(
        "adaptive", "--detector", help="adaptive (change against its neighbours) or content (frame-to-frame change)."
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="The detector's cut threshold (default: adaptive 2, content 27; lower finds more cuts).",
    ),
    min_scene_len: float = typer.Option(0.6, "--min-scene-len", help="Seconds: no scene (or last window) shorter."),
    max_scene_len: float = typer.Option(
        0.0, "--max-scene-len", help="Seconds: a longer scene is split into equal parts (0: no limit)."
    ),
    window: str | None = typer.Option(
        None, "--window", help="Fixed windows of this many seconds (e.g. 10 or 10s) instead of shot detection."
    ),
    workers: int | None = O_WORKERS,
    limit: int | None = O_LIMIT,
    shard: str | None = O_SHARD,
    overwrite: bool = O_OVERWRITE,
    keep_parts: bool = O_KEEP,
    part_rows: int | None = O_PART_ROWS,
    failed_out: str | None = O_FAILED,
    quiet: bool = O_QUIET,
    gpus: str | None = O_GPUS,
    engine: str = O_ENGINE,
    address: str | None = O_ADDRESS,
    ray_env: list[str] | None = O_RAY_ENV,
    ray_actors: int | None = O_RAY_ACTORS,
    no_file_check: bool = O_NO_FILE_CHECK,
    retry_failed: bool = O_RETRY_FAILED,
    cut: str | None = typer.Option(
        None,
        "--cut",
        help="Also write each scene as its own clip file in this folder (stream copy where it starts on a keyframe, "
        "else re-encoded); the output gets clip_path and clip_error columns.",
    ),
):
    """Split each video into scenes (shot boundaries, or fixed windows): one output row per scene."""
    from .scenes import SceneOptions, parse_seconds
    from .stages.scenes import ScenesStage

    opts = SceneOptions(
        detector=detector,
        threshold=threshold,
        min_len=min_scene_len,
        max_len=max_scene_len,
        window=parse_seconds(window, "--window") if window else 0.0,
    )
    stage = ScenesStage(opts)
    out = output_path(manifest, output, stage.suffix)
    ropts = run_config(
        workers=workers,
        limit=limit,
        shard=shard,
        overwrite=overwrite,
        keep_parts=keep_parts,
        part_rows=part_rows,
        quiet=quiet,
        failed_out=failed_out,
        no_file_check=no_file_check,
        retry_failed=retry_failed,
        gpus=gpus,
        engine=engine,
        address=address,
        ray_env=ray_env,
        ray_actors=ray_actors,
    )
    execute(stage, manifest, out, ropts)
    if cut:
        from .cut import cut_table

        counts = cut_table(out, cut, workers=max(1, workers or 1))
        failed = f", {counts['failed']} could not be cut (see clip_error)" if counts["failed"] else ""
        typer.echo(
            f"cut {counts['clips']} clips into {cut} ({counts['copied']} copied, {counts['encoded']} re-encoded, "
            f"{counts['kept']} there already){failed}."
        )


@app.command()
def tag(
    manifest: str = typer.Argument(..., help="CSV or Parquet with a `text` column (captions)."),
    key: str = typer.Option(..., "--key", "-k", help="objects, actions, or a custom key with --prompt-file."),
    output: str | None = O_OUT,
    backend: str = typer.Option("hf", "--backend", help="hf (in-process transformers), openai, or fake."),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Chat model id or local dir (default: Llama-3-8B-Instruct; gpt-4o-mini over the API).",
    ),
    prompt_file: Path | None = typer.Option(None, "--prompt-file", help="A system prompt for a custom key."),
    batch_size: int | None = O_BATCH,
    max_new_tokens: int = typer.Option(
        128, "--max-new-tokens", help="A batch runs until its longest answer; tag lists are short."
    ),
    text_column: str = typer.Option("text", "--text-column", help="The column holding the captions."),
    dtype: str | None = O_DTYPE,
    trust_remote_code: bool = O_TRUST_REMOTE_CODE,
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="OpenAI-compatible server URL for --backend openai (e.g. http://localhost:8000/v1; default: OpenAI's).",
    ),
    api_key_env: str = O_API_KEY_ENV,
    concurrency: int = O_CONCURRENCY,
    max_retries: int = O_MAX_RETRIES,
    timeout: float = O_TIMEOUT,
    price_in: float | None = O_PRICE_IN,
    price_out: float | None = O_PRICE_OUT,
    workers: int | None = O_TAG_WORKERS,
    limit: int | None = O_LIMIT,
    shard: str | None = O_SHARD,
    overwrite: bool = O_OVERWRITE,
    keep_parts: bool = O_KEEP,
    part_rows: int | None = O_PART_ROWS,
    failed_out: str | None = O_FAILED,
    quiet: bool = O_QUIET,
    device: str | None = O_DEVICE,
    gpus: str | None = O_GPUS,
    tp: int = O_TP,
    engine: str = O_ENGINE,
    address: str | None = O_ADDRESS,
    ray_env: list[str] | None = O_RAY_ENV,
    ray_actors: int | None = O_RAY_ACTORS,
):
    """Tag each caption with its main objects or actions, using an LLM."""
    from .backends.base import CaptionOptions
    from .stages.tag import build_tag_stage

    opts = CaptionOptions(
        max_new_tokens=max_new_tokens,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        base_url=base_url,
        api_key_env=api_key_env,
        concurrency=concurrency,
        max_retries=max_retries,
        timeout=timeout,
        price_in=price_in,
        price_out=price_out,
    )
    stage = build_tag_stage(
        key,
        backend=backend,
        model=model,
        prompt_file=prompt_file,
        batch_size=batch_size,
        text_column=text_column,
        options=opts,
    )
    out = output_path(manifest, output, key)
    ropts = run_config(
        workers=0 if workers is None else workers,
        limit=limit,
        shard=shard,
        overwrite=overwrite,
        keep_parts=keep_parts,
        part_rows=part_rows,
        quiet=quiet,
        device=device,
        failed_out=failed_out,
        gpus=gpus,
        tp=tp,
        engine=engine,
        address=address,
        ray_env=ray_env,
        ray_actors=ray_actors,
    )
    execute(stage, manifest, out, ropts)


@app.command()
def summarize(
    captions: str = typer.Argument(..., help="A captioned range table: the output of `vidcap caption --window`."),
    output: str | None = O_OUT,
    backend: str = typer.Option("hf", "--backend", help="hf (in-process transformers), openai, or fake."),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Chat model id or local dir (default: Llama-3-8B-Instruct; gpt-4o-mini over the API).",
    ),
    text_column: str = typer.Option("text", "--text-column", help="The column holding the window captions."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Tokens a summary may take."),
    batch_size: int | None = O_BATCH,
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server URL (--backend openai)."),
    api_key_env: str = O_API_KEY_ENV,
    limit: int | None = O_LIMIT,
    overwrite: bool = O_OVERWRITE,
    failed_out: str | None = O_FAILED,
    quiet: bool = O_QUIET,
    device: str | None = O_DEVICE,
):
    """One summary per video from its window captions, by a text LLM: one output row per video."""
    summarize_windows(
        captions,
        output_path(captions, output, "summary"),
        backend=backend,
        model=model,
        text_column=text_column,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        base_url=base_url,
        api_key_env=api_key_env,
        ropts=run_config(
            workers=0, limit=limit, overwrite=overwrite, quiet=quiet, device=device, failed_out=failed_out
        ),
    )


def summarize_windows(
    captions, out, *, backend, model, ropts: RunConfig, text_column="text", batch_size: int | None = None, **chat
) -> dict:
    """`vidcap summarize` and `caption --window --summary`: the timeline table beside `out`, then its run."""
    from .backends.base import CaptionOptions
    from .backends.llm import make_chat_backend
    from .stages.video_summary import SummaryStage, write_timelines

    timelines = write_timelines(captions, f"{out}.timeline.parquet", text_column)
    options = CaptionOptions(**chat)
    batch_size = batch_size or default_batch_size(backend, ropts.device, options.concurrency)
    stage = SummaryStage(make_chat_backend(backend, model, options), batch_size=batch_size)
    return execute(stage, timelines, out, ropts)


@app.command("tag-stats")
def tag_stats_cmd(
    output: Path = typer.Argument(..., help="An output of `vidcap tag`."),
    key: str = typer.Option(
        ..., "--key", "-k", help="The tag column to count: the --key the tag run used (objects, actions, ...)."
    ),
    top: int = typer.Option(50, "--top", help="Show the N most frequent tags."),
    png: Path | None = typer.Option(None, "--png", help="Also draw a bar chart into this PNG."),
):
    """Count the tags of a `vidcap tag` output: a table, and a bar chart with --png."""
    from .tags.stats import tag_stats

    _, table = tag_stats(output, key, top=top, png=png)
    typer.echo(table)
    if png:
        typer.echo(f"chart: {png}")


@app.command()
def bench(
    shape: str = typer.Option(
        "pllava-13b",
        "--shape",
        help="pllava-13b, pllava-7b, llava-1.6-mistral-7b, qwen2.5-vl-7b (random weights, real size), or tiny-<family> for a CPU smoke run.",
    ),
    model: str | None = typer.Option(None, "--model", help="Bench this model dir/preset instead of a random skeleton."),
    frames: int | None = typer.Option(None, "--frames", help="Frames per clip (default: the preset's)."),
    resolution: str = typer.Option("1280x720", "--resolution", help="WxH of the generated h264 clips."),
    seconds: float = typer.Option(5.0, "--seconds", help="Clip length."),
    videos: int = typer.Option(64, "--videos", help="Clips to generate and caption."),
    batch_size: int = typer.Option(
        16, "--batch-size", "-b", help="Rows the model works on at once (captions decoded together)."
    ),
    new_tokens: int = typer.Option(150, "--new-tokens", help="Tokens generated per clip (EOS ignored)."),
    lengths: str | None = typer.Option(
        None,
        "--lengths",
        help="Two token counts A:B; each caption ends at a length drawn from A to B (fixed seed per clip), as real captions vary.",
    ),
    resize: int | None = typer.Option(None, "--resize", help="Short side resize on the decode workers."),
    workers: int | None = O_WORKERS,
    baseline: bool = typer.Option(
        False, "--baseline", help="Also run the straightforward path on the same inputs and report the ratio."
    ),
    gpus: str | None = typer.Option(
        None, "--gpus", help="GPU counts to compare through the multi-GPU runner, e.g. 1,2 (cpu:1,cpu:2 on a CPU)."
    ),
    variants: str | None = typer.Option(
        None,
        "--variants",
        help="Prompt names (e.g. short,dense): compare one caption per clip (the longest variant) with one per variant, same clips and process.",
    ),
    caption_format: str = typer.Option(
        "text",
        "--caption-format",
        help="json (with --schema): decode the same clips free and constrained to the schema, and compare the decode steps.",
    ),
    schema: str | None = typer.Option(
        None,
        "--schema",
        metavar="NAME|FILE",
        help="With --caption-format json: a built-in schema or a JSON Schema file.",
    ),
    window: str | None = typer.Option(
        None,
        "--window",
        help="SECONDS: caption --videos windows of this length cut from --seconds long videos (range rows, as caption --window makes) against as many pre-cut clips of that length.",
    ),
    device: str | None = O_DEVICE,
    work_dir: Path = typer.Option(
        Path(".vidcap-bench"), "--work-dir", help="Where clips, model skeletons and outputs go."
    ),
):
    """End-to-end captioning throughput with random weights at real model size."""
    from .bench.run import BenchConfig, format_report, run_bench
    from .stages.caption_variants import parse_variants

    try:
        w, h = (int(x) for x in resolution.lower().split("x"))
    except ValueError:
        raise UsageError(f"--resolution '{resolution}' is not WxH, e.g. 1280x720.") from None
    span = None
    if lengths:
        try:
            low, high = (int(x) for x in lengths.split(":"))
            assert 1 <= low <= high
        except (ValueError, AssertionError):
            raise UsageError(f"--lengths '{lengths}' is not A:B with 1 <= A <= B, e.g. 40:300.") from None
        span = (low, high)
    cfg = BenchConfig(
        shape=shape,
        model=model,
        frames=frames,
        width=w,
        height=h,
        seconds=seconds,
        videos=videos,
        batch_size=batch_size,
        new_tokens=new_tokens,
        lengths=span,
        resize=resize,
        workers=workers,
        baseline=baseline,
        gpus=gpus,
        device=device,
        work_dir=str(work_dir),
        options={"variants": parse_variants(variants)} if variants else {},
        window=_bench_window(window, seconds),
    )
    cfg.options.update(_format_options(caption_format, schema))  # --caption-format json: bench.structured
    report = run_bench(cfg)
    typer.echo(format_report(report))
    typer.echo(f"full figures: {work_dir / 'bench.json'}")
    from .bench.run import failed_rows

    if failed_rows(report):
        raise typer.Exit(1)


@dev_app.command("tiny-model")
def tiny_model(
    out_dir: Path = typer.Argument(..., help="Folder to write the model into."),
    family: str = typer.Option(
        ..., "--family", help="qwen2-vl, qwen2.5-vl, qwen3-vl, internvl3, llava-next, llava-onevision, pllava or llama."
    ),
):
    """Write a tiny random-weight model (meaningless output) for smoke tests without downloads."""
    from .dev.tiny import FAMILIES, build_tiny_model

    if family not in FAMILIES:
        raise UsageError(f"unknown family '{family}'; choose one of: {', '.join(FAMILIES)}.")
    build_tiny_model(out_dir, family)
    typer.echo(f"wrote a tiny random {family} model to {out_dir} (its captions are meaningless)")


from .report.cli import register as _register_report  # noqa: E402

_register_report(app)


INTERRUPTED = "vidcap: interrupted; finished rows are saved. Run the same command again to resume."


# Open-Sora's caption-script flags, answered with the vidcap option that does the same.
SEED_FLAGS = {
    "--dp-size": "--gpus N (one model per GPU) or torchrun --nproc_per_node N -m vidcap ...",
    "--tp-size": "--tp K",
    "--bs": "--batch-size",
    "--batch_size": "--batch-size",
    "--model-path": "--model",
    "--pretrained_model_name_or_path": "--model",
    "--weight_dir": "--model",
    "--csv_path": "the manifest as the first argument",
    "--csv-path": "the manifest as the first argument",
    "--num_frames": "--num-frames",
    "--pooling_shape": "--pooling-shape",
    "--lora_alpha": "--lora-alpha",
    "--use_lora": "nothing (PLLaVA's LoRA is always merged at load)",
    "--prompt_template": "--prompt",
    "--error_message": "nothing (a failed row keeps status=failed and its error)",
}


def seed_flag_hint(argv) -> str | None:
    """One sentence for an Open-Sora flag given to vidcap (None if there is none)."""
    for arg in argv or []:
        if arg == "--":
            break
        flag = str(arg).split("=", 1)[0]
        if flag in SEED_FLAGS:
            return f"{flag} is Open-Sora's flag; in vidcap use {SEED_FLAGS[flag]} (see `vidcap caption --help`)."
    return None


def main(argv=None) -> int:
    import sys

    from .errors import FatalRunError

    protect_stderr()  # a closed stderr (`... 2>&1 | head -1`) stops the progress lines, not the run
    hint = seed_flag_hint(sys.argv[1:] if argv is None else argv)
    if hint:
        typer.echo(f"vidcap: error: {hint}", err=True)
        return 2
    try:
        code = app(args=argv, standalone_mode=False)
    except FatalRunError as exc:
        typer.echo(f"vidcap: stopped: {exc}", err=True)
        return 3
    except UsageError as exc:
        typer.echo(f"vidcap: error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        return 130
    except Exception as exc:  # click's own usage errors (click's, or the copy newer typer vendors)
        kinds = _click_kinds()
        if isinstance(exc, kinds["Exit"]):
            return exc.exit_code
        if isinstance(exc, kinds["ClickException"]):
            exc.show()
            return exc.exit_code
        if isinstance(exc, kinds["Abort"]):
            typer.echo(INTERRUPTED, err=True)
            return 130
        raise
    if type(code) is int and code:  # typer hands back typer.Exit codes; Ctrl-C arrives as Exit(130)
        if code == 130:
            typer.echo(INTERRUPTED, err=True)
        return code
    return 0


def _click_kinds() -> dict:
    """Exit, ClickException and Abort as tuples of classes: typer < 0.29 raises click's, later ones their
    vendored copy's (typer._click), whose Exit and Abort live on typer itself."""
    import importlib

    kinds: dict = {"Exit": (), "ClickException": (), "Abort": ()}
    for name in ("click.exceptions", "typer._click.exceptions", "typer"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for kind in kinds:
            cls = getattr(mod, kind, None)
            if isinstance(cls, type) and cls not in kinds[kind]:
                kinds[kind] += (cls,)
    return kinds


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
