"""Optional pieces a run needs, checked before the first row: the backend's packages (the `api` and `hf` extras),
the fsspec filesystems of the manifest's URLs, the output's and the manifest's own (the `remote` extra, s3fs,
gcsfs, adlfs), and Ray for `--engine ray`. A missing one ends the run in one sentence naming the `pip install`
line, before the output's parts folder exists, so nothing is left behind.

Only the manifest's `path` column is read here (streamed with pyarrow); a manifest that cannot be read is the
run's own error a moment later, not this module's.
"""

from __future__ import annotations

import importlib.util
import os
import re

from .errors import UsageError

# backend name -> (modules its setup imports, the extra that installs them)
BACKEND_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "openai": (("openai",), "api"),
    "hf": (("torch", "transformers"), "hf"),
    "hf-vlm": (("torch", "transformers"), "hf"),
    "hf-llava": (("torch", "transformers"), "hf"),
    "hf-pllava": (("torch", "transformers"), "hf"),
}
ENGINE_NEEDS = {"ray": (("ray",), "ray")}
# URL scheme -> the module its fsspec filesystem imports, and what pip installs it as
SCHEME_NEEDS = {
    "http": ("aiohttp", "remote"),
    "https": ("aiohttp", "remote"),
    "s3": ("s3fs", "s3fs"),
    "s3a": ("s3fs", "s3fs"),
    "gs": ("gcsfs", "gcsfs"),
    "gcs": ("gcsfs", "gcsfs"),
    "az": ("adlfs", "adlfs"),
    "abfs": ("adlfs", "adlfs"),
    "abfss": ("adlfs", "adlfs"),
    "hf": ("huggingface_hub", "huggingface_hub"),
}
LOCAL = ("", "file", "local")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def scheme(path) -> str:
    match = _SCHEME.match(str(path))
    return match.group(1).lower() if match else ""


def manifest_schemes(manifest) -> set[str]:
    """The URL schemes of the manifest's `path` column (empty when it cannot be read here)."""
    text = os.fspath(manifest) if not isinstance(manifest, str) else manifest
    if scheme(text) not in LOCAL or not os.path.isfile(text):
        return set()  # a remote manifest is read by fsspec later; its own scheme is checked apart
    try:
        batches = _path_batches(text)
        found: set[str] = set()
        for batch in batches:
            found.update(_batch_schemes(batch))
        return found - set(LOCAL)
    except Exception:  # noqa: BLE001  (the run reads the manifest next and words its problem itself)
        return set()


def _path_batches(path: str):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.lower().endswith(".parquet"):
        yield from (b.column(0) for b in pq.ParquetFile(path).iter_batches(columns=["path"], batch_size=1 << 16))
        return
    opts = pacsv.ConvertOptions(include_columns=["path"], column_types={"path": "string"})
    with pacsv.open_csv(path, convert_options=opts) as reader:
        for batch in reader:
            yield batch.column(0)


def _batch_schemes(column) -> set[str]:
    import pyarrow.compute as pc

    # a cheap test first: most manifests hold no URL at all
    if not pc.any(pc.match_substring(column, "://")).as_py():
        return set()
    got = pc.struct_field(pc.extract_regex(column, r"^(?P<s>[A-Za-z][A-Za-z0-9+.\-]*)://"), [0])
    return {str(s).lower() for s in pc.unique(got.drop_null()).to_pylist()}


def missing_for(
    backend: str | None, schemes: set[str], engine: str | None, remote_output: bool = False
) -> tuple[list[str], list[str]]:
    """(what is missing, in words; the pip install arguments that bring it)."""
    what: list[str] = []
    pip: list[str] = []
    extras: list[str] = []
    modules, extra = BACKEND_NEEDS.get(backend or "", ((), ""))
    for mod in modules:
        if not installed(mod):
            what.append(f"the {mod} package (backend {backend})")
            extras.append(extra)
    modules, extra = ENGINE_NEEDS.get(engine or "", ((), ""))
    for mod in modules:
        if not installed(mod):
            what.append(f"the {mod} package (--engine {engine})")
            extras.append(extra)
    remote = sorted(s for s in schemes if s not in LOCAL)
    if remote and not installed("fsspec"):
        what.append(f"fsspec ({', '.join(s + '://' for s in remote)} paths)")
        extras.append("remote")
    if remote_output and not installed("upath"):
        what.append("universal_pathlib (a remote -o output)")
        extras.append("remote")
    for s in remote:
        mod, package = SCHEME_NEEDS.get(s, ("", ""))
        if mod and not installed(mod):
            what.append(f"the {mod} package ({s}:// paths)")
            if package == "remote":
                extras.append("remote")
            elif package not in pip:
                pip.append(package)
    extras = sorted({e for e in extras if e})
    args = ([f"'vidcap[{','.join(extras)}]'"] if extras else []) + pip
    return what, args


def check(stage=None, manifest=None, output=None, engine: str | None = None) -> None:
    """Raise UsageError (one sentence, exit 2) when this run needs a package that is not installed."""
    backend = getattr(getattr(stage, "backend", None), "name", None)
    schemes = {scheme(p) for p in (manifest, output) if p is not None}
    if manifest is not None:
        schemes |= manifest_schemes(manifest)
    what, args = missing_for(backend, schemes, engine, remote_output=scheme(output) not in LOCAL)
    if what:
        raise UsageError(
            f"this run needs {_join(what)}, which {'is' if len(what) == 1 else 'are'} not installed; install "
            f"{'it' if len(what) == 1 else 'them'} with: pip install {' '.join(args)} (nothing was run)."
        )


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
