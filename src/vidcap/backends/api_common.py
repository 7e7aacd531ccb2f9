"""Request machinery shared by every OpenAI-compatible client (captioning, tagging).

One background event loop per client keeps HTTP connections alive across the runner's synchronous
batch calls; a semaphore bounds requests in flight; retries back off with jitter and honour
Retry-After; errors are sorted into retry / give up on this row / stop the run; usage and cost are
summed; the API key is redacted from every message that leaves this module.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import API, BUDGET, TIMEOUT, FatalRunError, UsageError, format_error
from .spend import SpendGate

log = logging.getLogger("vidcap.api")

OPENAI_URL = "https://api.openai.com/v1"
NO_KEY = "EMPTY"  # what vLLM / SGLang servers started without --api-key accept

# USD per million tokens (input, output), list prices when written; --price-in/--price-out override.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4-vision-preview": (10.00, 30.00),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o4-mini": (1.10, 4.40),
}


def price_for(model: str, price_in: float | None = None, price_out: float | None = None):
    """(in, out, source) per million tokens; a dated snapshot takes its family's price."""
    name = model.rsplit("/", 1)[-1] if model.startswith("openai/") else model
    known = [k for k in PRICES if name == k or name.startswith(k + "-")]
    table = PRICES[max(known, key=len)] if known else None
    if price_in is None and price_out is None:
        return (table[0], table[1], "table") if table else (None, None, None)
    base = table or (0.0, 0.0)
    pin = base[0] if price_in is None else float(price_in)
    pout = base[1] if price_out is None else float(price_out)
    return pin, pout, "user"


# Reasoning models reject max_tokens and any temperature but the default.
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


def chat_params(model: str, max_tokens: int, temperature: float | None) -> dict:
    """The token-limit and temperature fields a chat-completions request for `model` accepts."""
    temp = float(temperature or 0.0)
    if model.rsplit("/", 1)[-1].startswith(REASONING_PREFIXES):
        return {"max_completion_tokens": int(max_tokens), **({"temperature": temp} if temp not in (0, 1) else {})}
    return {"max_tokens": int(max_tokens), "temperature": temp}


class Redactor:
    """Removes secrets from text: the exact key, and anything shaped like a bearer token or sk- key."""

    _PATTERNS = (re.compile(r"sk-[A-Za-z0-9_\-]{6,}"), re.compile(r"(?i)(bearer\s+)[^\s\"',}]+"))

    def __init__(self, *secrets: str | None):
        self.secrets = sorted({s for s in secrets if s and s != NO_KEY and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text) -> str:
        text = str(text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        text = self._PATTERNS[0].sub("sk-***", text)
        return self._PATTERNS[1].sub(r"\1***", text)

    def strings(self, obj):
        """A copy of a dataclass with every str field redacted (whatever field a server echoes the key in)."""
        return replace(obj, **{f.name: self(v) for f in fields(obj) if isinstance(v := getattr(obj, f.name), str)})


class _RedactFilter(logging.Filter):
    """One filter per logger, holding the redactors of every client started in this process."""

    redactors: list = []

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for redactor in self.redactors:
            text = redactor(text)
        record.msg, record.args = text, None
        return True


_FILTER = _RedactFilter()


def guard_loggers(redactor: Redactor) -> None:
    """Library loggers (enabled by OPENAI_LOG=debug) may print headers; strip secrets there too."""
    if redactor.secrets:
        _RedactFilter.redactors.append(redactor)
    for name in ("vidcap.api", "openai", "openai._base_client", "httpx", "httpx2"):
        logging.getLogger(name).addFilter(_FILTER)  # adding the same filter twice is a no-op


def clean_url(url: str) -> str:
    """The base URL without user:password or query (safe for run.json and messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def resolve_base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")


def is_openai_url(url: str) -> bool:
    return (urlsplit(url).hostname or "").endswith("api.openai.com")


def resolve_api_key(base_url: str, env_name: str | None) -> str:
    """The key from the named variable; a self-hosted server may need none."""
    env_name = env_name or "OPENAI_API_KEY"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name):
        raise UsageError(
            "--api-key-env takes the name of an environment variable (like OPENAI_API_KEY), not the key itself."
        )
    key = os.environ.get(env_name, "").strip()
    if key:
        return key
    if is_openai_url(base_url):
        raise UsageError(
            f"no API key: set the environment variable {env_name} (or name another with --api-key-env) to call {clean_url(base_url)}."
        )
    return NO_KEY


def parse_retry_after(headers, cap: float) -> float | None:
    """Seconds to wait from `retry-after-ms`, `retry-after` (seconds or an HTTP date), capped."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    try:
        if value is not None:
            return min(max(float(value) / 1000.0, 0.0), cap)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


@dataclass
class RetryPolicy:
    max_retries: int = 5
    base: float = 0.5  # first backoff, seconds; doubles each attempt
    cap: float = 30.0  # longest backoff
    retry_after_cap: float = 120.0  # longest Retry-After we obey

    def delay(self, attempt: int) -> float:
        """Equal jitter: half fixed (so a storm still spreads out), half random."""
        d = min(self.cap, self.base * (2**attempt))
        return d / 2 + random.uniform(0, d / 2)


class MalformedResponse(Exception):
    """The server answered 2xx with something that is not a chat completion."""


@dataclass
class Outcome:
    action: str  # "retry" | "fail" (this row) | "fatal" (the run)
    code: str
    message: str
    retry_after: float | None = None


def classify(exc: BaseException, *, model: str, base_url: str, retry_after_cap: float) -> Outcome:
    """Sort an exception from one attempt into what to do next."""
    import json

    import openai

    where = clean_url(base_url)
    if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError)):
        return Outcome("retry", TIMEOUT, "no answer within the request timeout")
    if isinstance(exc, openai.APIConnectionError):
        return Outcome("retry", API, f"connection error ({_cause(exc)})")
    if isinstance(exc, (MalformedResponse, json.JSONDecodeError, openai.APIResponseValidationError)):
        return Outcome("retry", API, f"malformed response: {exc}")
    if not isinstance(exc, openai.APIStatusError):
        return Outcome("fail", API, f"{type(exc).__name__}: {exc}")
    status, detail = exc.status_code, _detail(exc)
    if status in (401, 403):
        return Outcome(
            "fatal",
            API,
            f"{where} refused the API key ({status}: {detail}); check the key in the variable named by --api-key-env.",
        )
    if status == 404:
        return Outcome(
            "fatal", API, f"{where} answered 404 for model '{model}' ({detail}); check --model and --base-url."
        )
    if status == 429 and _error_code(exc) == "insufficient_quota":
        return Outcome("fatal", API, f"{where} says the account is out of quota (429: {detail}).")
    if status in (408, 409, 425, 429) or status >= 500:
        wait = parse_retry_after(exc.response.headers, retry_after_cap) if exc.response is not None else None
        return Outcome("retry", API, f"{status}: {detail}", wait)
    return Outcome("fail", API, f"{status}: {detail}")


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return type(cause).__name__ if cause else str(exc)


def _error_code(exc) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body) if isinstance(body.get("error", body), dict) else body
    return str(err.get("code") or err.get("type") or "")


def _detail(exc) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)
    return getattr(exc, "message", "") or str(exc)


@dataclass
class UsageMeter:
    """Run totals; updated only on the client's event loop thread, read from any thread."""

    requests: int = 0
    ok: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict = field(default_factory=dict)  # code -> count

    def summary(self, model: str, price_in=None, price_out=None) -> dict:
        pin, pout, source = price_for(model, price_in, price_out)
        cost = None
        if pin is not None:
            cost = round((self.prompt_tokens * pin + self.completion_tokens * pout) / 1e6, 6)
        # Flat keys that cannot clash with the runner's own summary (ok, failed, rows...).
        return {
            "api_requests": self.requests,
            "api_attempts": self.attempts,
            "api_retries": self.retries,
            "api_errors": dict(self.errors),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "price_in": pin,
            "price_out": pout,
            "price_source": source,
            "cost_usd": cost,
        }


class LoopThread:
    """An asyncio loop in a daemon thread, so synchronous callers can share one connection pool."""

    def __init__(self, name: str = "vidcap-api"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro):
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C or a fatal error: stop the requests still in flight
            raise

    async def wrap(self, coro):
        """Await `coro` on this loop from any other event loop."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


def format_failure(outcome: Outcome, attempts: int, redactor: Redactor) -> str:
    tail = f" (after {attempts} attempts)" if attempts > 1 else ""
    return format_error(outcome.code, redactor(outcome.message) + tail)


@dataclass
class ChatReply:
    text: str = ""
    error: str = ""  # "code: message"; empty on success
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    attempts: int = 0


def parse_completion(resp) -> ChatReply:
    """A chat completion -> ChatReply; anything else is MalformedResponse (retried)."""
    if isinstance(resp, (str, bytes)):  # the SDK hands back a body it could not read as JSON
        text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else resp
        if text.lstrip()[:1] == "<":
            raise MalformedResponse(
                "the server returned an HTML page, not an OpenAI-compatible answer; check "
                "--base-url (an OpenAI-compatible URL usually ends in /v1)"
            )
        raise MalformedResponse(f"the server returned text, not a chat completion ({text.strip()[:60]!r})")
    try:
        choice = resp.choices[0]
        text = choice.message.content
        finish = choice.finish_reason or ""
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        raise MalformedResponse(f"no choices[0].message in the response ({type(exc).__name__})") from None
    if text is not None and not isinstance(text, str):
        raise MalformedResponse("message content is not text")
    usage = getattr(resp, "usage", None)
    return ChatReply(
        text=(text or "").strip(),
        finish_reason=str(finish),
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
    )


class ChatClient:
    """Chat-completions calls with bounded concurrency, retries and usage totals.

    `start()` opens an AsyncOpenAI client on a background loop; `run(coro)` drives a coroutine there
    from synchronous code and `await wrap(coro)` from any other event loop; `chat()` itself runs on
    that loop. Raises FatalRunError (and keeps raising it) once the server refuses the key or model.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url=None,
        api_key_env="OPENAI_API_KEY",
        concurrency=16,
        max_retries=5,
        timeout=60.0,
        price_in=None,
        price_out=None,
        backoff_base=0.5,
        backoff_cap=30.0,
        retry_after_cap=120.0,
        fatal_after_rejects=8,
    ):
        self.model = model
        self.base_url = resolve_base_url(base_url)
        self.api_key_env = api_key_env or "OPENAI_API_KEY"
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.policy = RetryPolicy(max(0, int(max_retries)), backoff_base, backoff_cap, retry_after_cap)
        self.price_in, self.price_out = price_in, price_out
        self.fatal_after_rejects = fatal_after_rejects
        self.usage = UsageMeter()
        self.redact = Redactor()
        self._key: str | None = None
        self._loop: LoopThread | None
        self._client: Any  # openai.AsyncOpenAI once started
        self._sem: asyncio.Semaphore | None
        self._loop = self._client = self._sem = None
        self._fatal = ""
        self._rejects = 0
        self._not_before = 0.0

    def start(self) -> None:
        if self._loop is not None:
            return
        self._key = resolve_api_key(self.base_url, self.api_key_env)
        self.redact = Redactor(self._key)
        guard_loggers(self.redact)
        self._loop = LoopThread()
        self._loop.run(self._open())

    async def _open(self) -> None:
        import openai

        # max_retries=0: the retry count and the backoff are ours, not the library's.
        self._client = openai.AsyncOpenAI(
            api_key=self._key, base_url=self.base_url, max_retries=0, timeout=self.timeout
        )
        self._sem = asyncio.Semaphore(self.concurrency)

    def run(self, coro):
        self.start()
        assert self._loop is not None
        return self._loop.run(coro)

    async def wrap(self, coro):
        self.start()
        assert self._loop is not None
        return await self._loop.wrap(coro)

    def close(self) -> None:
        if self._loop is None:
            return
        if self.gate is not None and self.gate.saved is not None:
            self.gate.saved(self.gate.total, self.gate.worst_seen)
        try:
            self._loop.run(self._client.close())
        finally:
            self._loop.stop()
            self._loop = self._client = None

    def check_fatal(self) -> None:
        if self._fatal:
            raise FatalRunError(self._fatal)

    async def chat(self, messages: list, prompt_tokens_max: int = 0, **params) -> ChatReply:
        """One chat completion, retried as the policy says. `prompt_tokens_max`: an upper estimate of the
        request's prompt tokens, for the `--budget` gate (0: the gate counts only the completion)."""
        self.usage.requests += 1
        assert self._sem is not None  # start() made it
        async with self._sem:
            attempt = 0
            while True:
                self.check_fatal()
                await self._wait_pause()
                worst = await self._admit(prompt_tokens_max, params)
                if worst is None:
                    self._count_error(BUDGET)
                    return ChatReply(error=self._refused_text())
                self.usage.attempts += 1
                try:  # --timeout bounds the whole request, a body that trickles in included
                    resp = await asyncio.wait_for(
                        self._client.chat.completions.create(model=self.model, messages=messages, **params),
                        timeout=self.timeout,
                    )
                    reply = parse_completion(resp)
                except asyncio.CancelledError:
                    self._settle(worst, None, prompt_tokens_max)
                    raise
                except Exception as exc:  # sorted below: retry, fail the row, or stop the run
                    self._settle(worst, None, prompt_tokens_max)
                    out = classify(
                        exc, model=self.model, base_url=self.base_url, retry_after_cap=self.policy.retry_after_cap
                    )
                    self._streak_of(out)
                    if out.action == "retry" and attempt < self.policy.max_retries:
                        await self._backoff(out, attempt)
                        attempt += 1
                        continue
                    return self.redact.strings(self._failed(out, attempt + 1))
                self._settle(worst, reply, prompt_tokens_max)
                return self.redact.strings(self._succeeded(self.redact.strings(reply), attempt + 1))

    gate: SpendGate | None = None  # set by vidcap.budget.attach_spend for a run that writes an output

    async def _admit(self, prompt_tokens_max: int, params: dict) -> float | None:
        """The worst-case USD reserved for this attempt (0.0 with no gate or no price); None: not sent. A request
        that does not fit while others are in flight waits for them: what they really cost may leave room."""
        pin, pout, _ = price_for(self.model, self.price_in, self.price_out)
        if self.gate is None or pin is None:
            return 0.0
        max_tokens = int(params.get("max_tokens") or params.get("max_completion_tokens") or 0)
        worst = self.gate.worst_usd(prompt_tokens_max, max_tokens, pin, pout)
        while not self.gate.admit(worst):
            if self.gate.held <= 0 or self.gate.refused:
                self.gate.refuse()
                return None
            await asyncio.sleep(0.02)
        return worst

    def _settle(self, worst: float, reply: ChatReply | None, prompt_tokens_max: int) -> None:
        pin, pout, _ = price_for(self.model, self.price_in, self.price_out)
        if self.gate is None or pin is None:
            return
        if reply is None:
            self.gate.settle(worst, 0.0)
            return
        usd = (reply.prompt_tokens * pin + reply.completion_tokens * pout) / 1e6
        self.gate.settle(worst, usd, reply.prompt_tokens, prompt_tokens_max)

    def _refused_text(self) -> str:
        gate = self.gate
        assert gate is not None and gate.ceiling is not None
        return format_error(
            BUDGET,
            f"not sent: this output has cost ${gate.total:.4f} of its --budget of "
            f"${gate.ceiling:.2f}, and this request could cost up to ${gate.worst_seen:.4f}",
        )

    async def _backoff(self, out: Outcome, attempt: int) -> None:
        self.usage.retries += 1
        delay = out.retry_after if out.retry_after is not None else self.policy.delay(attempt)
        if out.retry_after is not None:  # the server asked everyone to wait, not just this request
            self._not_before = max(self._not_before, time.monotonic() + delay)
        log.info("retry %d in %.1fs: %s", attempt + 1, delay, self.redact(f"{out.code}: {out.message}"))
        await asyncio.sleep(delay)

    async def _wait_pause(self) -> None:
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    # Attempts that failed the same way in a row before the run stops: few while nothing has worked yet (a
    # closed port, a wrong URL answering HTML), more once the server has answered (a restart mid-run).
    STREAK_BEFORE_FIRST_OK = 24
    STREAK_AFTER_OK = 200

    def _streak_of(self, out: Outcome) -> None:
        """Stop the run (finished rows are kept) when every attempt keeps failing the same way."""
        kind = (out.code, out.message[:40])
        self._streak = self._streak + 1 if kind == getattr(self, "_streak_kind", None) else 1
        self._streak_kind = kind
        limit = self.STREAK_BEFORE_FIRST_OK if self.usage.ok == 0 else self.STREAK_AFTER_OK
        if self._streak >= limit and out.action != "fatal":
            self._fatal = self.redact(
                f"the last {self._streak} requests to {clean_url(self.base_url)} all failed "
                f"the same way ({out.code}: {out.message}); stopping. Check --base-url and "
                "that the server is up, then run the same command again to resume."
            )
            raise FatalRunError(self._fatal)

    _streak = 0

    def _succeeded(self, reply: ChatReply, attempts: int) -> ChatReply:
        self._rejects = 0
        self._streak = 0
        self.usage.ok += 1
        self.usage.prompt_tokens += reply.prompt_tokens
        self.usage.completion_tokens += reply.completion_tokens
        reply.attempts = attempts
        if not reply.text:
            reply.error = format_error(
                "empty_text", f"the model returned no text (finish_reason={reply.finish_reason or 'none'})"
            )
            self._count_error("empty_text")
        return reply

    def _failed(self, out: Outcome, attempts: int) -> ChatReply:
        if out.action == "fatal":
            self._fatal = self.redact(out.message)
            raise FatalRunError(self._fatal)
        if out.action == "fail" and self.usage.ok == 0:
            self._rejects += 1
            if self._rejects >= self.fatal_after_rejects:
                self._fatal = self.redact(
                    f"the first {self._rejects} requests to {clean_url(self.base_url)} were all rejected "
                    f"({out.message}); fix the request settings (model, frames, --detail) before rerunning."
                )
                raise FatalRunError(self._fatal)
        self.usage.failed += 1
        self._count_error(out.code)
        return ChatReply(error=format_failure(out, attempts, self.redact), attempts=attempts)

    def _count_error(self, code: str) -> None:
        self.usage.errors[code] = self.usage.errors.get(code, 0) + 1

    def usage_summary(self) -> dict:
        return self.usage.summary(self.model, self.price_in, self.price_out)

    def provenance(self) -> dict:
        return {
            "model": self.model,
            "base_url": clean_url(self.base_url),
            "api_key_env": self.api_key_env,
            "concurrency": self.concurrency,
            "max_retries": self.policy.max_retries,
            "timeout": self.timeout,
        }


# Images one request may carry, by API host (as documented by each provider when written).
HOST_IMAGE_LIMITS = {
    "api.openai.com": 500,
    "openai.azure.com": 10,  # Azure OpenAI GPT-4 Turbo with Vision / GPT-4o chat requests
    "generativelanguage.googleapis.com": 3000,  # Gemini's OpenAI-compatible endpoint
    "api.anthropic.com": 100,
    "api.together.xyz": 8,
}


def image_limit(base_url: str, max_images: int | None) -> tuple[int, str] | None:
    """(images per request, where the limit comes from) for this endpoint, None when unknown and unset."""
    if max_images is not None:
        return int(max_images), "--max-images"
    host = (urlsplit(base_url).hostname or "").lower()
    for known, limit in HOST_IMAGE_LIMITS.items():
        if host == known or host.endswith("." + known):
            return limit, host
    return None
