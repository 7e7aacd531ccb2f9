"""A real HTTP file server for tests: http.server in a thread serving a folder, with single-range Range support
(206 answers, as nginx, S3 and CDNs give) or without it (the whole file every time: saying so with
`Accept-Ranges: none`, or silently as Python's own http.server does), and a count of the body bytes it sent, so
tests can tell a ranged read from a full download."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(SimpleHTTPRequestHandler):
    ranges = True
    drip_s = 0.5
    counter: dict

    def log_message(self, *args):  # keep test output clean
        pass

    def send_head(self):
        if self.path.startswith("/private/"):  # what a store answers without the right credentials
            self.send_error(403)
            return None
        if self.path.startswith("/broken/"):
            self.send_error(503)
            return None
        path = self.translate_path(self.path.removeprefix("/drip"))
        if os.path.isdir(path) or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start, end = 0, size - 1
        match = RANGE.match(self.headers.get("Range", "").strip()) if self.ranges is True else None
        if match and (match[1] or match[2]):
            if match[1]:
                start, end = int(match[1]), min(int(match[2] or size - 1), size - 1)
            else:  # bytes=-N: the last N bytes
                start = max(0, size - int(match[2]))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if self.ranges != "ignored":
            self.send_header("Accept-Ranges", "bytes" if self.ranges else "none")
        self.end_headers()
        f = open(path, "rb")  # noqa: SIM115 - http.server closes what send_head returns
        f.seek(start)
        self._left = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        left = self._left
        drip = self.path.startswith("/drip/")  # a byte every `drip_s` seconds: alive, never done
        while left > 0:
            if drip:
                time.sleep(self.drip_s)
            chunk = source.read(1 if drip else min(left, 1 << 16))
            if not chunk:
                break
            outputfile.write(chunk)
            left -= len(chunk)
            with self.counter["lock"]:
                self.counter["bytes"] += len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client closing early is normal (a range it no longer needs)
        pass


class HTTPFiles:
    """`HTTPFiles(root, ranges=True)`: serves `root` at `self.url`; `sent()` is the body bytes sent so far.
    ranges: True (206 answers), False (200 and `Accept-Ranges: none`), "ignored" (200, nothing said)."""

    def __init__(self, root, ranges: bool | str = True, self_signed: bool = False):
        self.counter: dict[str, Any] = {"bytes": 0, "lock": threading.Lock()}
        handler = type("Handler", (_Handler,), {"ranges": ranges, "counter": self.counter})
        self.server = _Server(("127.0.0.1", 0), partial(handler, directory=str(root)))
        scheme = "http"
        if self_signed:  # https with a certificate no client trusts, as a dev box or an intercepting proxy gives
            scheme = "https"
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*_self_signed())
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sent(self) -> int:
        return self.counter["bytes"]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _self_signed() -> tuple[str, str]:
    """(certificate, key) files of a fresh self-signed certificate for 127.0.0.1 (openssl)."""
    folder = tempfile.mkdtemp(prefix="vidcap-cert-")
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
