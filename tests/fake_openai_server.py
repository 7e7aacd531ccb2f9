"""A real local HTTP server speaking the chat-completions protocol, with scripted failures.

Each request's prompt may carry a tag `#id=<name>`; `server.script[name]` is a list of behaviours used
one per attempt (the last one repeats). Behaviours: "ok", "slow:<s>" (answer after s seconds),
"429:<retry-after>" (or "429" / "429-date:<s>" for an HTTP-date header), "500", "503", "400", "401",
"403", "404", "quota" (429 insufficient_quota), "malformed" (200 with broken JSON), "nochoices",
"empty" (200 with empty content), "length" (cut by the token limit), "drop" (close the socket without answering), "echo-key" (500 whose
message repeats the Authorization header), "html" (200 with an HTML page, as a wrong URL gives), "trickle:<s>" (a
valid answer sent one byte at a time over about s seconds), "caption-key" (a caption that repeats the header), "finish-key" (empty content, a finish_reason that repeats the header), "finish-key-text" (a caption, a finish_reason that repeats the header), "surrogate" (a caption holding a lone surrogate), "fffd" (a caption holding 84 U+FFFD characters, as a server that decoded bad bytes gives), "loop" (a caption
repeating itself until the token limit, unless the request sets frequency_penalty > 0). Every request is checked for shape and recorded.

A request with `response_format` {"type": "json_schema", ...} (structured captions) is answered "ok" with an
instance of its schema (indented, keys in reverse order: vidcap compacts and reorders them); "json-bad"
answers prose instead, "json-cut" the instance cut off before its closing brace (finish_reason "length").

`FakeOpenAIServer(usage="openai")` counts tokens as the OpenAI API does (text ~4 characters a token, each
image by its detail and size with the documented tiling rule) and answers "ok" with a caption of a length
drawn (fixed per prompt and first image) between 30 % and 100 % of the request's token limit, as real captions vary.

Run standalone for manual tries: `python tests/fake_openai_server.py --port 8011`.
"""

from __future__ import annotations

import base64
import email.utils
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

_TAG = re.compile(r"#id=([\w.\-]+)")


@dataclass
class Hit:
    tag: str
    t: float
    model: str
    prompt: str
    images: list  # decoded JPEG bytes
    details: list
    body: dict
    auth: str
    problems: list = field(default_factory=list)  # request-shape violations


class FakeOpenAIServer:
    def __init__(self, *, delay: float = 0.0, models=None, require_images: bool = True, usage: str = "simple"):
        self.usage = usage  # "simple": 10 + 85 per image; "openai": text and image tokens as OpenAI counts them
        self.delay = delay  # seconds every "ok" answer waits (lets requests overlap)
        self.models = models  # accepted model names; None = any
        self.require_images = require_images  # False for text-only clients (tagging)
        self.script: dict[str, list[str]] = {}
        self.hits: list[Hit] = []
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def hits_for(self, tag: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.tag == tag]

    def problems(self) -> list[str]:
        with self._lock:
            return [p for h in self.hits for p in h.problems]

    def _record(self, hit: Hit) -> str:
        """Record a hit; returns the behaviour scripted for this attempt of its tag."""
        with self._lock:
            n = sum(1 for h in self.hits if h.tag == hit.tag)
            self.hits.append(hit)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            steps = self.script.get(hit.tag) or ["ok"]
            return steps[min(n, len(steps) - 1)]

    def _done(self) -> None:
        with self._lock:
            self.inflight -= 1


def parse_request(body: dict, auth: str, models, require_images: bool = True) -> Hit:
    problems, images, details, prompt = [], [], [], ""
    model = body.get("model", "")
    if not model or (models is not None and model not in models):
        problems.append(f"unexpected model {model!r}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append("no messages")
        messages = [{}]
    content = messages[-1].get("content")
    if isinstance(content, str):  # plain text message (text-only clients)
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        problems.append("content is not a list of parts")
        content = []
    for part in content:
        if part.get("type") == "text":
            prompt += part.get("text", "")
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            details.append((part.get("image_url") or {}).get("detail"))
            if not url.startswith("data:image/jpeg;base64,"):
                problems.append("image is not a JPEG data URL")
                continue
            data = base64.b64decode(url.split(",", 1)[1])
            if data[:2] != b"\xff\xd8":
                problems.append("image data is not JPEG")
            images.append(data)
        else:
            problems.append(f"unknown content part {part.get('type')!r}")
    if not prompt:
        problems.append("no text prompt")
    if require_images and not images:
        problems.append("no images")
    if not ("max_tokens" in body or "max_completion_tokens" in body):
        problems.append("no token limit")
    tag = cast(str, (_TAG.search(prompt) or [None, ""])[1])
    return Hit(tag, time.monotonic(), model, prompt, images, details, body, auth, problems)


def completion(hit: Hit, text: str | None = None, finish: str = "stop") -> dict:
    if text is None:
        text = f"A caption for {hit.tag or 'a clip'} from {len(hit.images)} frames."
    prompt_tokens = 10 + 85 * len(hit.images)
    completion_tokens = len(text.split())
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": hit.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def openai_image_tokens(data: bytes, detail: str | None) -> int:
    """OpenAI's published rule: 85 at low detail; else fit 2048, short side 768, 170 per 512 tile + 85."""
    import io
    import math

    from PIL import Image

    if detail == "low":
        return 85
    w: float
    h: float
    w, h = Image.open(io.BytesIO(data)).size
    s = min(1.0, 2048 / max(w, h))
    w, h = w * s, h * s
    s = min(1.0, 768 / min(w, h))
    return 170 * math.ceil(w * s / 512) * math.ceil(h * s / 512) + 85


def openai_completion(hit: Hit) -> dict:
    """An answer whose usage counts tokens as the OpenAI API does, its length a fixed draw per prompt."""
    import hashlib
    import math

    limit = int(hit.body.get("max_tokens") or hit.body.get("max_completion_tokens") or 64)
    seed = hashlib.sha1(hit.prompt.encode() + (hit.images[0] if hit.images else b"")).hexdigest()
    share = 0.3 + 0.7 * (int(seed[:8], 16) / 0xFFFFFFFF)
    n = max(1, int(limit * share))
    text = " ".join(f"w{i % 50}" for i in range(n)) + "."
    out = completion(hit, text=text)
    prompt_tokens = (
        math.ceil(len(hit.prompt) / 4)
        + 7
        + sum(openai_image_tokens(img, d) for img, d in zip(hit.images, hit.details, strict=False))
    )
    out["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
    return out


def _error(status: int, message: str, code: str | None = None, headers=None):
    err = {"message": message, "type": "invalid_request_error", "code": code}
    return status, json.dumps({"error": err}).encode(), headers or {}


def schema_of(hit: Hit) -> dict | None:
    """The JSON Schema a request asks the answer to follow (response_format json_schema), else None."""
    fmt = hit.body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema") or {}
    if not isinstance(spec.get("schema"), dict) or not spec.get("name"):
        hit.problems.append("response_format json_schema without a name and a schema")
        return None
    return spec["schema"]


def instance(schema: dict, name: str, tag: str):
    """A value valid against `schema` (the subset vidcap's schemas use), made up from the field name."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        return {k: instance(v, k, tag) for k, v in reversed(list((schema.get("properties") or {}).items()))}
    if kind == "array":
        return [instance(schema.get("items") or {}, name, tag) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = f"The {name} of {tag or 'a clip'}."
    return text[: schema.get("maxLength", len(text))]


def respond(server: FakeOpenAIServer, hit: Hit, behaviour: str):
    """(status, body bytes, headers) for one behaviour, or None to drop the connection."""
    kind, _, arg = behaviour.partition(":")
    schema = schema_of(hit)
    if schema is not None and kind in ("ok", "json-cut"):
        text = json.dumps(instance(schema, "caption", hit.tag), indent=1)
        if kind == "json-cut":
            return 200, json.dumps(completion(hit, text=text.rstrip().rstrip("}"), finish="length")).encode(), {}
        return 200, json.dumps(completion(hit, text=text)).encode(), {}
    if kind == "json-bad":
        return 200, json.dumps(completion(hit, text="Sure! Here is a caption: a dog runs.")).encode(), {}
    if kind == "slow":
        time.sleep(float(arg))
        kind = "ok"
    if kind == "ok":
        time.sleep(server.delay)
        if server.usage == "openai":
            return 200, json.dumps(openai_completion(hit)).encode(), {}
        return 200, json.dumps(completion(hit)).encode(), {}
    if kind == "loop":
        if float(hit.body.get("frequency_penalty") or 0) > 0:
            return 200, json.dumps(completion(hit)).encode(), {}
        limit = int(hit.body.get("max_tokens") or hit.body.get("max_completion_tokens") or 64)
        text = " ".join(["the dog runs"] * limit)[: 4 * limit]
        return 200, json.dumps(completion(hit, text=text, finish="length")).encode(), {}
    if kind == "429":
        return _error(429, "Rate limit reached", "rate_limit_exceeded", {"Retry-After": arg or "1"})
    if kind == "429-date":
        when = email.utils.formatdate(time.time() + float(arg or 1), usegmt=True)
        return _error(429, "Rate limit reached", "rate_limit_exceeded", {"Retry-After": when})
    if kind == "quota":
        return _error(429, "You exceeded your current quota", "insufficient_quota")
    if kind in ("500", "503", "400", "403"):
        return _error(int(kind), f"scripted {kind}")
    if kind == "401":
        return _error(401, "Incorrect API key provided", "invalid_api_key")
    if kind == "404":
        return _error(404, f"The model `{hit.model}` does not exist", "model_not_found")
    if kind == "echo-key":
        return _error(500, f"upstream failed for header {hit.auth}")
    if kind == "malformed":
        return 200, b'{"id": "chatcmpl-fake", "choices": [{"message": ', {}
    if kind == "nochoices":
        return 200, json.dumps({"id": "chatcmpl-fake", "object": "chat.completion"}).encode(), {}
    if kind == "length":
        return 200, json.dumps(completion(hit, text="A caption cut short", finish="length")).encode(), {}
    if kind == "empty":
        return 200, json.dumps(completion(hit, text="", finish="content_filter")).encode(), {}
    if kind == "drop":
        return None
    if kind == "html":
        return 200, b"<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>", {"Content-Type": "text/html"}
    if kind == "trickle":
        return 200, json.dumps(completion(hit)).encode(), {"X-Trickle": arg or "5"}
    if kind == "surrogate":  # JSON may carry a lone surrogate escape; Python decodes it to an unencodable str
        body = json.dumps(completion(hit, text="A clip. BROKEN")).replace("BROKEN", "\\ud800")
        return 200, body.encode(), {}
    if kind == "finish-key":
        return 200, json.dumps(completion(hit, text="", finish=hit.auth)).encode(), {}
    if kind == "finish-key-text":
        return 200, json.dumps(completion(hit, finish=f"stop {hit.auth}")).encode(), {}
    if kind == "fffd":
        return 200, json.dumps(completion(hit, text="A clip of " + "\ufffd" * 84 + " a street.")).encode(), {}
    if kind == "caption-key":
        return 200, json.dumps(completion(hit, text=f"A clip. {hit.auth}")).encode(), {}
    raise ValueError(f"unknown behaviour {behaviour!r}")


def _make_handler(server: FakeOpenAIServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            if self.path.rstrip("/").endswith("/models"):
                return self._send(200, json.dumps({"object": "list", "data": []}).encode(), {})
            self._send(*_error(404, "not found"))

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(*_error(404, f"no route {self.path}"))
            try:
                body = json.loads(raw)
            except ValueError:
                return self._send(*_error(400, "body is not JSON"))
            hit = parse_request(body, self.headers.get("Authorization", ""), server.models, server.require_images)
            behaviour = server._record(hit)
            try:
                answer = respond(server, hit, behaviour)
                if answer is None:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self._send(*answer)
            finally:
                server._done()

        def _send(self, status, data, headers):
            headers = dict(headers)
            trickle = float(headers.pop("X-Trickle", 0) or 0)
            self.send_response(status)
            self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            try:
                if trickle:  # each byte in time, the whole body late: only a deadline on the request ends it
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(trickle / len(data))
                else:
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

    return Handler


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args()
    srv = FakeOpenAIServer(delay=args.delay)
    srv._httpd.server_close()
    srv._httpd = ThreadingHTTPServer(("127.0.0.1", args.port), _make_handler(srv))
    print(f"fake chat-completions server on http://127.0.0.1:{args.port}/v1")
    srv._httpd.serve_forever()
