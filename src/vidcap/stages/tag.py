"""The tag stage: each row's caption (`text`) -> a chat model -> a clean tag list in the column `<key>`."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from ..errors import EMPTY_TEXT, PARSE, VidcapError
from ..manifest import ABSPATH, range_key
from ..prompts.tags import TagPrompt, check_key, tag_prompt
from ..tags.parse import parse_tags
from .base import Item, ResultTable, Stage


def _text(row: dict, column: str) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


class TextLoader:
    """Runs on the loader side: the caption, or `empty_text` so the row never reaches the model."""

    def __init__(self, column: str = "text"):
        self.column = column

    def __call__(self, row: dict) -> str:
        text = _text(row, self.column)
        if not text:
            if str(row.get("status") or "ok") != "ok":  # the caption run's own verdict on this clip
                raise VidcapError(EMPTY_TEXT, f"the caption failed ({_text(row, 'error')}), so there is nothing to tag")
            raise VidcapError(EMPTY_TEXT, f"the '{self.column}' column is empty, so there is nothing to tag")
        return text


class TagStage(Stage):
    """`TagStage(key, backend, prompt=None, batch_size=64, text_column="text")`.

    `backend` is a vidcap.backends.llm.ChatBackend (`make_chat_backend("hf"|"openai"|"fake", model, options)`);
    `prompt` a TagPrompt (default: the built-in prompt for `key`, which must then be objects or actions).
    """

    name = "tag"
    reads_files = False  # tags come from the caption text, not the file
    default_workers = 0  # loading is reading a string: worker processes would only cost start-up time

    def __init__(
        self, key: str, backend, prompt: TagPrompt | None = None, batch_size: int = 64, text_column: str = "text"
    ):
        self.key = check_key(key)
        self.prompt = prompt or tag_prompt(key)
        self.backend = backend
        self.batch_size = max(1, int(batch_size))
        self.text_column = text_column
        self.required_columns = (text_column,)
        self.suffix = key
        self.columns = [key]
        self.parse_failed = 0
        self.model_failed = 0

    def fingerprint(self) -> dict:
        opts = self.backend.options
        return {
            "stage": self.name,
            "key": self.key,
            "prompt": self.prompt.fingerprint(),
            "backend": self.backend.name,
            "model": self.backend.model,
            "text_column": self.text_column,
            "max_new_tokens": opts.max_new_tokens,
            "temperature": opts.temperature,
        }

    def provenance(self) -> dict:
        return dict(self.fingerprint(), prompt_source=self.prompt.source, engine=self.backend.provenance())

    def row_key(self, row: dict) -> str:
        """Path and caption: a changed caption is a new row whose tags must be made again."""
        ident = f"{row.get(ABSPATH) or ''}\x00{_text(row, self.text_column)}"
        key = hashlib.sha1(ident.encode("utf-8", "surrogatepass")).hexdigest()[:20]
        span = range_key(row)  # a range row (docs/ranges.md): two scenes with one caption are two rows
        return key if span is None else f"{key}#t={span}"

    def loader(self) -> TextLoader:
        return TextLoader(self.text_column)

    def setup(self, device: str | None = None) -> None:
        self.backend.setup(device)

    def process_batch(self, items: list[Item]) -> list[dict]:
        from ..backends.llm import ChatRequest

        requests = [ChatRequest(self.prompt.messages(item.data)) for item in items]
        results = self.backend.chat(requests)
        out = []
        for res in results:
            if res.error:
                self.model_failed += 1
                out.append({"error": res.error, self.key: None})
                continue
            try:
                tags = parse_tags(res.text, truncated=res.finish_reason == "length")
            except VidcapError as exc:
                self.parse_failed += 1
                out.append({"error": exc.text, self.key: None})
                continue
            out.append({self.key: tags})
        return out

    def teardown(self) -> None:
        self.backend.teardown()

    def finish(self, results: ResultTable) -> dict:
        """parse_failed counts every row of the output whose answer had no tag list, rows kept from an
        earlier run included (the counter in summary_extra sees only this run's)."""
        return {"parse_failed": results.count(f"trim(split_part(coalesce(error, ''), ':', 1)) = '{PARSE}'")}

    def summary_extra(self) -> dict:
        usage = self.backend.usage_summary() or {}
        return {
            "key": self.key,
            "model": self.backend.model,
            "parse_failed": self.parse_failed,
            **{k: v for k, v in usage.items() if k not in ("model", "failed", "ok")},
        }


def build_tag_stage(
    key: str,
    *,
    backend: str = "hf",
    model: str | None = None,
    prompt_file=None,
    prompt_text: str | None = None,
    batch_size: int | None = None,
    text_column: str = "text",
    options=None,
) -> TagStage:
    """What `vidcap tag` needs: key + backend name + model (+ CaptionOptions for tokens/API settings).

    Default batch (vidcap.backends.base.default_batch_size): 64 captions per generate call in-process on a GPU
    (the seed used 32; on an H100 an 8B Llama tagged 36 captions/s at 32 and 53/s at 64, answers of 32
    tokens), 8 on CPU, 4 x concurrency over an API.
    """
    from ..backends.base import CaptionOptions
    from ..backends.llm import make_chat_backend
    from ..config import default_batch_size

    prompt = tag_prompt(key, prompt_text=prompt_text, prompt_file=prompt_file)
    options = options or CaptionOptions()
    if batch_size is None:
        batch_size = default_batch_size(backend, options.device, options.concurrency)
    options = replace(options, batch_size=batch_size)
    return TagStage(key, make_chat_backend(backend, model, options), prompt, batch_size, text_column)
