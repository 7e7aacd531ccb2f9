"""A real S3 endpoint for tests: moto's server on a local port, reached over HTTP by s3fs from any process
(CLI runs, decode workers, Ray actors), the way a user points vidcap at MinIO with AWS_ENDPOINT_URL."""

from __future__ import annotations

import logging
import socket


class S3:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        import s3fs

        self.fs = s3fs.S3FileSystem(
            endpoint_url=self.env["AWS_ENDPOINT_URL"], key="testing", secret="testing", use_listings_cache=False
        )

    def bucket(self, name: str) -> str:
        self.fs.mkdir(name)
        return name

    def ls(self, prefix: str) -> list[str]:
        self.fs.invalidate_cache()
        try:
            return sorted(p.split("/")[-1] for p in self.fs.ls(prefix, detail=False))
        except FileNotFoundError:
            return []

    def read_parquet(self, key: str):
        import io

        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.fs.cat_file(key)))

    def stop(self):
        self.server.stop()
