"""``ObjectStore`` over boto3: AWS S3 and S3-compatible servers such as MinIO.

Retries, timeouts and multipart transfers are boto3's own (``botocore.config.Config``
and ``boto3.s3.transfer.TransferConfig``); this module only adds what the contract
needs on top: quote-free ETags, error translation and the resolution of conditional
writes whose first response was lost.

Conditional writes use ``PutObject`` with ``If-Match``/``If-None-Match: *``. AWS S3
and MinIO both evaluate the condition atomically with the write (MinIO takes its
namespace lock around the check and the commit); a lost condition is a 412
``PreconditionFailed``. AWS may also answer 409 ``ConditionalRequestConflict`` when
another conditional write to the key is in flight; both mean "you did not win".
An ``If-Match`` against a missing key is a 404 ``NoSuchKey``, which is also "you did
not win" for ``put_if_match``.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, NoReturn
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chromasnap.storage.store import (
    Blob,
    ByteCallback,
    ChecksumMismatch,
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    StoreError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MiB = 1024 * 1024

# S3's hard limit for one DeleteObjects request.
_DELETE_BATCH = 1000
# How many times get() re-issues a GET whose body broke mid-stream: botocore's retry
# handler stops once the response headers have arrived, so a reset while reading the
# body would otherwise surface as a failure for a perfectly retryable condition.
_BODY_READ_ATTEMPTS = 3

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})


def _strip_etag(etag: str) -> str:
    """S3 returns ETags as quoted strings; the contract uses them bare everywhere."""
    return etag.strip().strip('"')


def _quote_etag(etag: str) -> str:
    return f'"{_strip_etag(etag)}"'


def _check_key(key: str) -> None:
    """Reject keys the local backend could not store either, so both behave alike."""
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
        raise StoreError(f"invalid object key {key!r}: use a relative path like 'a/b.json'")


class _HashingReader:
    """A deliberately non-seekable file wrapper that hashes what boto3 reads.

    Because it cannot seek, s3transfer reads it strictly sequentially, exactly once,
    into bounded in-memory parts that it uploads in parallel (and re-sends from memory
    on retry). So the SHA-256 covers precisely the bytes that were uploaded, even if
    the file changes while we read it, and costs no second pass over the file.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class S3Store:
    """An ``ObjectStore`` rooted at ``s3://bucket/prefix``.

    ``max_attempts`` is the total number of tries per request (first one
    included); ``page_size`` is the ListObjectsV2 page size (S3 caps it at 1000).
    Uploads hold up to ``max_concurrency * multipart_chunksize`` bytes in memory
    (64 MiB with the defaults).

    Credentials and region come from boto3's standard chain (environment, shared
    config/profile, web identity / IRSA / pod identity, instance metadata). When
    ``endpoint_url`` is given (MinIO), path-style addressing is used and the region
    defaults to ``us-east-1`` if none is configured.
    """

    def __init__(
        self,
        url: str,
        endpoint_url: str | None = None,
        *,
        region: str | None = None,
        retry_mode: Literal["standard", "adaptive"] = "standard",
        max_attempts: int = 8,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_concurrency: int = 8,
        multipart_threshold: int = 16 * MiB,
        multipart_chunksize: int = 8 * MiB,
        page_size: int = 1000,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """Create the boto3 client; no request is made until the first call.

        ``credentials`` (access key id, secret) replace the standard AWS chain,
        for a second bucket with its own keys (a bootstrap source).
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        self.url = url
        self.bucket = parts.netloc
        prefix = parts.path.strip("/")
        # Every key lives under "<prefix>/"; an empty prefix means the bucket root.
        self._root = f"{prefix}/" if prefix else ""
        self._page_size = page_size

        key_id, secret = credentials if credentials else (None, None)
        session = boto3.session.Session(
            region_name=region, aws_access_key_id=key_id, aws_secret_access_key=secret
        )
        region_name = session.region_name or ("us-east-1" if endpoint_url else None)
        config = Config(
            region_name=region_name,
            # total_max_attempts counts the first try; the older max_attempts key
            # counts only retries, an off-by-one that is easy to misread.
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # Transfers use max_concurrency threads; leave room for metadata calls
            # made concurrently from other threads so they never wait for a socket.
            max_pool_connections=max_concurrency + 4,
            tcp_keepalive=True,
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        self._client: S3Client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            use_threads=True,
            # The CRT client ignores most of these settings and is picked
            # heuristically; the classic one behaves the same on every machine.
            preferred_transfer_client="classic",
        )
        # upload_file streams through a non-seekable reader (see _HashingReader), so
        # parts are buffered in memory; boto3's constructor does not expose this cap.
        self._transfer.max_in_memory_upload_chunks = max_concurrency

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    # -- helpers ---------------------------------------------------------------

    def _key(self, key: str) -> str:
        _check_key(key)
        return self._root + key

    def _raise(self, op: str, key: str, err: Exception) -> NoReturn:
        """Translate a botocore failure into the store's error types."""
        where = f"s3://{self.bucket}/{self._root}{key}"
        if isinstance(err, ClientError):
            error = err.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            message = error.get("Message", "")
            if code in _NOT_FOUND_CODES:
                raise NotFound(f"{where} does not exist") from err
            if code in _PRECONDITION_CODES or status == 412:
                raise PreconditionFailed(f"{op} {where}: condition not met ({code})") from err
            if code == "NoSuchBucket":
                raise StoreError(f"{op} {where}: bucket {self.bucket!r} does not exist") from err
            raise StoreError(f"{op} {where} failed: {code or status} {message}".rstrip()) from err
        # BotoCoreError covers connection failures and timeouts after retries ran out
        # and missing credentials; their messages never include secrets.
        raise StoreError(f"{op} {where} failed: {err}") from err

    @contextmanager
    def _errors(self, op: str, key: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as err:
            self._raise(op, key, err)

    def _conditional_put(self, op: str, key: str, data: bytes, if_match: str | None) -> str:
        """``PutObject`` with ``If-Match: <if_match>``, or ``If-None-Match: *`` when None."""
        full = self._key(key)
        try:
            if if_match is not None:
                resp = self._client.put_object(
                    Bucket=self.bucket, Key=full, Body=data, IfMatch=_quote_etag(if_match)
                )
            else:
                resp = self._client.put_object(
                    Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*"
                )
        except ClientError as err:
            if self._won_despite_conflict(err, full, data):
                log.info("%s %s: first response was lost but our write landed", op, key)
                return hashlib.md5(data, usedforsecurity=False).hexdigest()
            if if_match is not None and _code(err) in _NOT_FOUND_CODES:
                raise PreconditionFailed(f"{op} {key}: object does not exist") from err
            self._raise(op, key, err)
        except BotoCoreError as err:
            self._raise(op, key, err)
        return _strip_etag(resp["ETag"])

    def _won_despite_conflict(self, err: ClientError, full_key: str, data: bytes) -> bool:
        """Tell a real lost race from a retry that collided with our own earlier attempt.

        If the first attempt committed but its response was lost (connection reset,
        timeout), boto3 retries and the retry fails the condition against our own
        write. A single-part PutObject's ETag is the MD5 of its bytes (AWS without
        SSE-KMS, and MinIO), so when the object now holds exactly our bytes we won.
        Only checked when boto3 actually retried: a first-attempt 412 is a plain loss.
        """
        if _code(err) not in _PRECONDITION_CODES:
            return False
        if err.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) == 0:
            return False
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=full_key)
        except (ClientError, BotoCoreError):
            return False
        ours = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return _strip_etag(head["ETag"]) == ours and head["ContentLength"] == len(data)

    # -- the ObjectStore contract ------------------------------------------------

    def put(self, key: str, data: bytes) -> str:
        """Atomically write ``data``; return the new ETag."""
        with self._errors("put", key):
            resp = self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return _strip_etag(resp["ETag"])

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Write only if the current ETag is ``etag``; raise PreconditionFailed otherwise."""
        return self._conditional_put("put_if_match", key, data, etag)

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Write only if ``key`` does not exist; raise PreconditionFailed otherwise."""
        return self._conditional_put("put_if_absent", key, data, None)

    def get(self, key: str) -> Blob:
        """Read a whole object; raise NotFound."""
        blob = self._get(key, None)
        assert blob is not None  # only a conditional GET can answer 304
        return blob

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        """Conditional GET: ``None`` when the ETag still matches (304), else the new blob."""
        return self._get(key, etag)

    def _get(self, key: str, etag: str | None) -> Blob | None:
        full = self._key(key)
        extra: dict[str, Any] = {"IfNoneMatch": _quote_etag(etag)} if etag else {}
        for attempt in range(1, _BODY_READ_ATTEMPTS + 1):
            try:
                resp = self._client.get_object(Bucket=self.bucket, Key=full, **extra)
            except ClientError as err:
                if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 304:
                    return None
                self._raise("get", key, err)
            except BotoCoreError as err:
                self._raise("get", key, err)
            body = resp["Body"]
            try:
                # Not ``with body``: StreamingBody.__enter__ returns the raw urllib3
                # stream, whose errors bypass botocore's wrapping and length check.
                data = body.read()
            except BotoCoreError as err:
                # Raised while streaming the body (reset, read timeout, short read).
                if attempt == _BODY_READ_ATTEMPTS:
                    self._raise("get", key, err)
                log.debug("get %s: body read failed (%s); re-issuing", key, err)
                continue
            finally:
                body.close()
            return Blob(data=data, etag=_strip_etag(resp["ETag"]))
        raise AssertionError("unreachable")

    def head(self, key: str) -> ObjectInfo:
        """Size and ETag without the body; raise NotFound."""
        with self._errors("head", key):
            resp = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        return ObjectInfo(
            key=key,
            size=resp["ContentLength"],
            etag=_strip_etag(resp["ETag"]),
            last_modified=resp["LastModified"].timestamp(),
        )

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """All objects under ``prefix`` in key order (ListObjectsV2 pages)."""
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self._root + prefix,
            StartAfter=self._root + start_after if start_after else "",
            PaginationConfig={"PageSize": self._page_size},
        )
        with self._errors("list", prefix):
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(
                        key=obj["Key"][len(self._root) :],
                        size=obj["Size"],
                        etag=_strip_etag(obj["ETag"]),
                        last_modified=obj["LastModified"].timestamp(),
                    )

    def delete_many(self, keys: builtins.list[str]) -> None:
        """Delete keys in batches of 1000; missing keys are not an error."""
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            with self._errors("delete", batch[0]):
                resp = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True},
                )
            errors = resp.get("Errors", [])
            if errors:
                first = errors[0]
                raise StoreError(
                    f"delete failed for {len(errors)} of {len(batch)} keys, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".rstrip()
                )

    def upload_file(self, key: str, path: Path, *, on_bytes: ByteCallback | None = None) -> str:
        """Upload a local file (multipart and parallel when large); return its SHA-256 hex."""
        full = self._key(key)
        with path.open("rb") as raw, self._errors("upload", key):
            reader = _HashingReader(raw)
            self._client.upload_fileobj(
                reader,  # type: ignore[arg-type]  # duck-typed file; the stubs want IO[Any]
                self.bucket,
                full,
                Config=self._transfer,
                Callback=on_bytes,
            )
        return reader.sha256.hexdigest()

    def download_file(
        self,
        key: str,
        path: Path,
        size: int,
        sha256: str,
        *,
        on_bytes: ByteCallback | None = None,
    ) -> None:
        """Download to ``path`` (parallel ranges when large), verifying size and SHA-256.

        Raises ChecksumMismatch (and leaves no file at ``path``) when they differ.
        """
        full = self._key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Same directory, so the final rename is atomic and never crosses filesystems.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            with self._errors("download", key):
                self._client.download_file(
                    self.bucket, full, str(tmp), Config=self._transfer, Callback=on_bytes
                )
            # Ranged parts land out of order, so the hash needs its own pass.
            got_size, got_sha = _file_digest(tmp)
            if got_size != size or got_sha != sha256:
                raise ChecksumMismatch(
                    f"s3://{self.bucket}/{full}: expected {size} bytes sha256 {sha256}, "
                    f"got {got_size} bytes sha256 {got_sha}"
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
