"""Captions from any OpenAI-compatible chat-completions server (OpenAI GPT-4o, vLLM, SGLang).

One request per video: the prompt as text, then the K frames as JPEG data URLs. Requests run
concurrently on a background event loop (see api_common.ChatClient); `caption()` serves the
runner's synchronous batches and `caption_one()` lets an async runner stream rows one by one.
"""

from __future__ import annotations

import asyncio
import base64
from types import ModuleType
from typing import Any, cast

import numpy as np

from ..errors import UsageError, format_error
from .api_common import REASONING_PREFIXES as _REASONING_PREFIXES  # noqa: F401  (used by llm.py)
from .api_common import ChatClient, chat_params, image_limit
from .base import CaptionBackend, CaptionOptions, CaptionRequest, CaptionResult
from .options import APIOptions
from .spend import SpendGate, worst_prompt_tokens
from .structured import response_format, schema_of

DEFAULT_MODEL = "gpt-4o"
DETAILS = ("low", "high", "auto")


def default_prompt() -> str:
    """The seed's GPT-4V prompt (`video-f3-detail-3ex`)."""
    from ..prompts.caption import GPT4V_DEFAULT, get_prompt

    return get_prompt(GPT4V_DEFAULT).text


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> str:
    """An RGB uint8 [H,W,3] frame -> `data:image/jpeg;base64,...`."""
    frame = np.ascontiguousarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H,W,3] RGB frame, got {frame.dtype} {list(frame.shape)}")
    cv2: ModuleType | None
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        ok, buf = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise ValueError("JPEG encoding failed")
        data = buf.tobytes()
    else:
        import io

        from PIL import Image

        out = io.BytesIO()
        Image.fromarray(frame).save(out, format="JPEG", quality=int(quality))
        data = out.getvalue()
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def frame_list(request: CaptionRequest) -> list[np.ndarray]:
    frames = np.asarray(request.frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"expected frames [K,H,W,3], got shape {list(frames.shape)}")
    return [frames[0]] if request.is_image else list(frames)


class OpenAIBackend(CaptionBackend):
    name = "openai"
    counts_spend = True
    Options = APIOptions
    options: APIOptions

    def __init__(self, preset, options: CaptionOptions | APIOptions):
        super().__init__(preset, options)
        options = self.options
        if options.detail not in DETAILS:
            raise UsageError(f"--detail must be one of {', '.join(DETAILS)}, not '{options.detail}'.")
        self.jpeg_quality = int(options.jpeg_quality)
        self.client = ChatClient(
            self.model_label(),
            base_url=options.base_url,
            api_key_env=options.api_key_env,
            concurrency=options.concurrency,
            max_retries=options.max_retries,
            timeout=options.timeout,
            price_in=options.price_in,
            price_out=options.price_out,
            backoff_base=float(options.backoff_base),
            retry_after_cap=float(options.retry_after_cap),
        )
        self._prompt: str | None = None
        self.schema = schema_of(options)
        if options.budget is not None and self.client.usage_summary()["price_in"] is None:
            raise UsageError(
                f"--budget needs a price, and none is known for the model '{self.model_label()}'; "
                "give --price-in and --price-out (USD per million tokens)."
            )

    def model_label(self) -> str:
        return (self.preset.model_id or self.preset.name) if self.preset else DEFAULT_MODEL

    def provenance(self) -> dict:
        return {
            "backend": self.name,
            **self.client.provenance(),
            "detail": self.options.detail,
            "max_new_tokens": self.options.max_new_tokens,
            "temperature": self.options.temperature,
            "jpeg_quality": self.jpeg_quality,
        }

    def setup(self, device: str | None = None) -> None:
        self.client.start()  # raises UsageError for a missing key before any row is read

    def teardown(self) -> None:
        self.client.close()

    def usage_summary(self) -> dict:
        """Run totals: requests, ok, failed, retries, tokens, and cost_usd (None for unpriced models)."""
        return self.client.usage_summary()

    def caption(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        """Caption a batch concurrently (up to options.concurrency in flight); same order out."""
        if not requests:
            return []
        return self.client.run(self._caption_all(list(requests)))

    def heal_caption(self, requests: list[CaptionRequest], decoding) -> list[CaptionResult]:
        """`caption` with a heal attempt's penalties, temperature and seed in these requests only."""
        if not requests:
            return []
        return self.client.run(self._caption_all(list(requests), self._params(decoding)))

    def max_images(self):
        return image_limit(self.client.base_url, self.options.max_images)

    def spent_usd(self) -> float | None:
        return self.client.usage_summary().get("cost_usd")

    def spend_gate(self) -> SpendGate | None:
        return self.client.gate

    def set_spend_gate(self, gate: SpendGate) -> None:
        self.client.gate = gate

    async def caption_one(self, request: CaptionRequest) -> CaptionResult:
        """Caption one request; awaitable from any event loop, so a runner can keep
        `concurrency` rows in flight and write each as it lands. Raises FatalRunError."""
        return await self.client.wrap(self._caption_async(request))

    async def _caption_all(self, requests, params: dict | None = None):
        tasks = [asyncio.ensure_future(self._caption_async(r, params)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _caption_async(self, request: CaptionRequest, params: dict | None = None) -> CaptionResult:
        self.client.check_fatal()
        try:
            # cv2 releases the GIL, so encoding in threads overlaps with the network.
            messages = await asyncio.get_running_loop().run_in_executor(None, self._messages, request)
        except ValueError as exc:
            return CaptionResult(error=format_error("model", f"cannot encode frames: {exc}"), finish_reason="")
        worst = worst_prompt_tokens(
            request.prompt or self._default_prompt(),
            [(f.shape[1], f.shape[0]) for f in frame_list(request)],
            self.options.detail,
        )
        reply = await self.client.chat(messages, worst, **(params or self._params()))
        return CaptionResult(
            text=reply.text if not reply.error else "",
            error=reply.error,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            finish_reason=reply.finish_reason,
        )

    def _messages(self, request: CaptionRequest) -> list[dict]:
        prompt = request.prompt or self._default_prompt()
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        for i, frame in enumerate(frame_list(request)):
            url = self._jpeg(request, i, frame)
            content.append({"type": "image_url", "image_url": {"url": url, "detail": self.options.detail}})
        return [{"role": "user", "content": content}]

    _jpegs: dict | None = None  # --variants: each clip's frames encoded once for all its requests

    def _jpeg(self, request: CaptionRequest, i: int, frame) -> str:
        memo = self._jpegs
        key = (id(request.frames), i)
        if memo is not None and key in memo:
            return memo[key]
        url = encode_jpeg(frame, self.jpeg_quality)
        if memo is not None:
            memo[key] = url
        return url

    def caption_variants(self, groups: list[list[CaptionRequest]]) -> list[list[CaptionResult]]:
        """One request per variant; the variants of a clip share its frames, so each frame is encoded once."""
        self._jpegs = {}  # keyed by the frames array's id: valid while these requests hold their arrays
        try:
            return super().caption_variants(groups)
        finally:
            self._jpegs = None

    def _default_prompt(self) -> str:
        if self._prompt is None:
            self._prompt = default_prompt()
        return self._prompt

    def _params(self, decoding=None) -> dict:
        params = self._decoding_params(decoding)
        if self.schema is not None:  # --caption-format json: the server decodes to the schema
            params["response_format"] = response_format(self.schema)
        return params

    def _decoding_params(self, decoding=None) -> dict:
        if decoding is None:
            limit = cast(int, self.options.max_new_tokens)  # CaptionStage resolved it
            return chat_params(self.client.model, limit, self.options.temperature)
        temperature = self.options.temperature if decoding.temperature is None else decoding.temperature
        params = chat_params(
            self.client.model, cast(int, decoding.max_new_tokens or self.options.max_new_tokens), temperature
        )
        for name in ("frequency_penalty", "presence_penalty", "top_p", "seed"):
            if getattr(decoding, name) is not None:
                params[name] = getattr(decoding, name)
        return params
