"""Run the real MinIO server for tests: a loopback port, a temp data dir, fixed keys.

The binary is built by ``make test`` (``hack/build-tools.sh``) into
``${CHROMASNAP_CACHE:-$HOME/.cache/chromasnap}/bin/minio``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from chromasnap.cli.localstack import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY = "chromasnap-test"
SECRET_KEY = "chromasnap-test-secret"  # noqa: S105 - throwaway loopback-only server
REGION = "us-east-1"


def cache_dir() -> Path:
    """Where ``make`` puts the tools it builds."""
    env = os.environ.get("CHROMASNAP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "chromasnap"


def minio_binary() -> Path:
    """Path of the MinIO binary (it may not exist yet)."""
    return cache_dir() / "bin" / "minio"


def s3_env() -> dict[str, str]:
    """Environment under which boto3's default credential chain finds this server's keys.

    Profiles and instance metadata are switched off so a developer's own AWS
    configuration can never leak into (or receive requests from) the tests.
    """
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


class MinioServer:
    """A MinIO process on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        binary: Path | None = None,
        *,
        startup_timeout: float = 30.0,
        data_dir: Path | None = None,
    ) -> None:
        """Configure; nothing runs until ``start``."""
        self.binary = binary or minio_binary()
        self.startup_timeout = startup_timeout
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self._own_data_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="chromasnap-minio-"))
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._bucket_seq = itertools.count(1)
        self._client: S3Client | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MinioServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, port: int | None = None) -> None:
        """Start MinIO (on ``port``, else a free one) and wait until it answers its probe."""
        if not self.binary.exists():
            raise FileNotFoundError(f"MinIO binary not found at {self.binary}; run `make test`")
        # The port can be taken between free_port() and MinIO's bind; try a few.
        for _ in range(3):
            self.port = port or free_port()
            console = free_port()
            env = {
                **os.environ,
                "MINIO_ROOT_USER": self.access_key,
                "MINIO_ROOT_PASSWORD": self.secret_key,
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
                "MINIO_REGION": self.region,
            }
            with self._log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [
                        str(self.binary),
                        "server",
                        "--quiet",
                        "--address",
                        f"127.0.0.1:{self.port}",
                        "--console-address",
                        f"127.0.0.1:{console}",
                        str(self.data_dir),
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_live():
                return
            self._kill()
        raise RuntimeError(f"MinIO did not become live; log: {self.log_tail()}")

    def _wait_live(self) -> bool:
        assert self._proc is not None
        url = f"{self.endpoint}/minio/health/live"
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.02
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False  # exited: most likely the port was taken
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(delay)  # poll interval, backing off; not a fixed wait
            delay = min(delay * 2, 0.25)
        return False

    def log_tail(self, n: int = 4000) -> str:
        """The end of MinIO's output, for failure messages."""
        try:
            return self._log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def _kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            if self._own_data_dir:
                # The data is thrown away next, so a graceful shutdown (seconds
                # spent draining) buys nothing.
                self._proc.kill()
            else:
                self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def stop_process(self) -> None:
        """Stop the MinIO process only (SIGTERM), keeping its data: ``start(port=self.port)``
        resumes it, as an outage of the object store would end."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=15)
        self._kill()

    def stop(self) -> None:
        """Stop MinIO and remove the data it created."""
        self._kill()
        self._client = None
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._log_path.unlink(missing_ok=True)

    def client(self) -> S3Client:
        """An admin boto3 client with explicit keys (independent of the environment)."""
        if self._client is None:
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name=self.region,
                config=Config(s3={"addressing_style": "path"}),
            )
        return self._client

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique one when ``name`` is None); return its name."""
        name = name or f"test-{os.getpid()}-{next(self._bucket_seq)}"
        self.client().create_bucket(Bucket=name)
        return name

    def new_bucket_url(self, prefix: str = "coll") -> str:
        """``s3://<fresh bucket>/<prefix>`` for one test's isolated store."""
        bucket = self.create_bucket()
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
