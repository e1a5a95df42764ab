"""Servers on the loopback address for the object-store tests (never the internet).

* `S3Server`: moto's S3 server mode in a thread, on a free port, with one bucket.
* `FileServer`: ``http.server`` over a folder in a thread, logging every request (method,
  path, status) so that tests can count the GETs of chunk keys; paths under ``/forbidden/``
  answer 403, chunk keys under ``/stall/`` are accepted and never answered.
* `AuthS3Server`: moto's S3 server in a child process that checks credentials.
* `silent_port`: a listening socket that never answers (a hung server).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: Credentials moto accepts (it does not check signatures unless configured to).
S3_KEY = "voxflow-test-key"
S3_SECRET = "voxflow-test-secret-do-not-leak"
BUCKET = "voxflow-test"
#: Names of zarr metadata documents; every other object of a store is a chunk.
METADATA_NAMES = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


class S3Server:
    """moto's S3 server on 127.0.0.1 (a free port) with the bucket ``BUCKET``."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": S3_KEY, "secret": S3_SECRET}

    def url(self, name: str) -> str:
        return f"s3://{BUCKET}/{name}"

    def stop(self) -> None:
        self._server.stop()


class AuthS3Server:
    """moto's S3 server in a child process that checks credentials (its IAM signature checks,
    enabled after the 3 unauthenticated calls that create the user, its access key and policy), with
    the bucket ``BUCKET``. ``kill()`` ends it abruptly, as a crashed server."""

    def __init__(self) -> None:

        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.kill()
                    raise RuntimeError(f"moto's server did not start on port {port}") from None
                time.sleep(0.2)
        try:
            self._set_up()
        except BaseException:
            self.kill()
            raise

    def _set_up(self) -> None:
        """The user, its key and an allow-all S3 policy (unsigned calls), then the bucket."""
        import boto3

        unsigned = {"endpoint_url": self.endpoint, "region_name": "us-east-1"}
        iam = boto3.client("iam", aws_access_key_id="a", aws_secret_access_key="b", **unsigned)
        iam.create_user(UserName="voxflow")
        key = iam.create_access_key(UserName="voxflow")["AccessKey"]
        self.key, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        allow = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*"}]}
        allow["Statement"][0]["Resource"] = "*"  # type: ignore[index]
        iam.put_user_policy(UserName="voxflow", PolicyName="s3", PolicyDocument=json.dumps(allow))
        boto3.client(
            "s3", aws_access_key_id=self.key, aws_secret_access_key=self.secret, **unsigned
        ).create_bucket(Bucket=BUCKET)

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret}

    def url(self, name: str) -> str:
        return f"s3://{BUCKET}/{name}"

    def kill(self) -> None:
        self._process.kill()
        self._process.wait(timeout=30)


class _LoggingHandler(SimpleHTTPRequestHandler):
    requests: list[tuple[str, str, int]]
    stopped: threading.Event

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = int(code) if isinstance(code, (int, HTTPStatus)) or str(code).isdigit() else 0
        self.requests.append((self.command, self.path, status))

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``requests`` instead."""

    def send_head(self) -> Any:
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/stall/") and not name.startswith(METADATA_NAMES):
            # Accept the request and never answer (until the server stops): a hung chunk read.
            self.stopped.wait()
            return None
        if self.path.startswith("/forbidden/"):
            self.send_error(HTTPStatus.FORBIDDEN, "forbidden by the test server")
            return None
        return super().send_head()


class FileServer:
    """``http.server`` over ``folder`` on 127.0.0.1 (a free port), in a thread.

    ``requests`` lists ``(method, path, status)`` of every request, in order.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests: list[tuple[str, str, int]] = []
        self._stopped = threading.Event()
        handler = type(
            "Handler", (_LoggingHandler,), {"requests": self.requests, "stopped": self._stopped}
        )
        self._server = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
        )
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.root = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"{self.root}/{name}"

    def chunk_gets(self) -> list[str]:
        """Paths of the GETs of chunk objects (anything but zarr metadata documents)."""
        return [
            path
            for method, path, _ in self.requests
            if method == "GET" and not path.rsplit("/", 1)[-1].startswith(METADATA_NAMES)
        ]

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def silent_port() -> tuple[socket.socket, int]:
    """A socket that accepts connections (in the kernel backlog) but never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, int(listener.getsockname()[1])
