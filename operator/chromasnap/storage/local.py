"""``ObjectStore`` over a local directory (``file:///abs/path``): the demo and tests.

Layout under the root: every key is a regular file at ``<root>/<key>``; the
reserved directory ``<root>/.chromasnap/`` holds temp files (``tmp/``) and lock
files (``locks/``) and never shows up in listings.

Atomicity:

* Every write goes to a temp file in ``.chromasnap/tmp`` (same filesystem), is
  fsynced, then ``os.replace``d over the key and the directory is fsynced: readers
  see the old bytes or the new bytes, never a mix, and a crash leaves at most an
  orphaned temp file.
* Every write to a key (conditional or not) holds an exclusive ``fcntl.flock`` on
  ``.chromasnap/locks/<sha256(key)>`` from the ETag check to the rename. ``flock``
  excludes other processes *and* other threads (each call opens its own file
  description), so the check-then-replace of a conditional write is atomic with
  respect to every other writer on this host. Plain writes take the lock too, so a
  conditional write can never overwrite a change it did not see. Lock files are
  never deleted: unlinking one while another writer waits on it would let a third
  writer lock a fresh inode and break mutual exclusion. ``os.link``-based
  create-if-absent was the alternative, but it covers only ``put_if_absent`` and
  ``If-Match`` needs the lock anyway, so one mechanism serves both.
* This is for one host (or a filesystem with working ``flock``, which rules out
  some network filesystems); use S3 or MinIO to share a store between machines.

ETags are the MD5 hex of the content, like a single-part S3 PUT. So that ``head``
and ``list`` do not re-read whole files, the ETag is cached in an extended
attribute written to the temp file *before* the rename (so bytes and ETag are
swapped together) and stamped with the size and mtime it was computed for; if the
stamp does not match, or the filesystem has no user xattrs, it is recomputed.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

from chromasnap.storage.store import (
    Blob,
    ByteCallback,
    ChecksumMismatch,
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    StoreError,
)

RESERVED_DIR = ".chromasnap"
_XATTR = "user.chromasnap.etag"
_CHUNK = 1024 * 1024
# mkstemp creates 0600 files; objects should read like ordinarily written files.
_FILE_MODE = 0o644


def _check_key(key: str) -> None:
    """Keys are relative '/'-paths that cannot escape the root or hit reserved files."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid object key {key!r}: use a relative path like 'a/b.json'")
    if parts[0] == RESERVED_DIR:
        raise StoreError(f"invalid object key {key!r}: {RESERVED_DIR}/ is reserved")


def _md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def _read_cached_etag(fd: int, st: os.stat_result) -> str | None:
    try:
        value = os.getxattr(fd, _XATTR).decode()
    except OSError:
        return None
    etag, _, stamp = value.partition(" ")
    return etag if stamp == _stamp(st) else None


def _write_cached_etag(fd: int, etag: str) -> None:
    # Best effort: filesystems without user xattrs just recompute on read.
    with contextlib.suppress(OSError):
        os.setxattr(fd, _XATTR, f"{etag} {_stamp(os.fstat(fd))}".encode())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """An ``ObjectStore`` rooted at a local directory given as ``file:///abs/path``."""

    def __init__(self, url: str) -> None:
        """Open (and create if needed) the directory behind ``url``."""
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise StoreError(f"not a local URL: {url!r} (expected file:///absolute/path)")
        root = Path(unquote(parts.path))
        if not root.is_absolute():
            raise StoreError(f"local store path must be absolute: {url!r}")
        self.url = url
        self.root = root
        self._tmp = root / RESERVED_DIR / "tmp"
        self._locks = root / RESERVED_DIR / "locks"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._locks.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({self.url!r})"

    # -- helpers ---------------------------------------------------------------

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root.joinpath(*key.split("/"))

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        name = hashlib.sha256(key.encode()).hexdigest()
        fd = os.open(self._locks / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def _current_etag(self, path: Path) -> str | None:
        """The ETag of the file at ``path``, or ``None`` if absent."""
        try:
            with path.open("rb") as f:
                return self._etag_of(f)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return None

    def _etag_of(self, f: IO[bytes]) -> str:
        st = os.fstat(f.fileno())
        cached = _read_cached_etag(f.fileno(), st)
        if cached is not None:
            return cached
        h = _md5()
        while chunk := f.read(_CHUNK):
            h.update(chunk)
        f.seek(0)
        return h.hexdigest()

    def _write(self, key: str, fill: Callable[[IO[bytes]], str], check: Callable[[], None]) -> str:
        """Write a temp file with ``fill`` (returns the ETag), run ``check`` under the
        key's lock, then atomically move the file into place."""
        dest = self._path(key)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), _FILE_MODE)
                etag = fill(f)
                f.flush()
                os.fsync(f.fileno())
                _write_cached_etag(f.fileno(), etag)
            # Bytes are written before the lock is taken, so a slow upload never
            # blocks other writers; only the check and the rename are serialised.
            with self._locked(key):
                check()
                self._replace(tmp, dest)
            return etag
        finally:
            tmp.unlink(missing_ok=True)

    def _replace(self, tmp: Path, dest: Path) -> None:
        for _ in range(10):
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, dest)
            except FileNotFoundError:
                # delete_many pruned the now-empty parent between mkdir and rename.
                continue
            except IsADirectoryError as err:
                raise StoreError(f"{dest} is a directory, not an object") from err
            _fsync_dir(dest.parent)
            return
        raise StoreError(f"could not create {dest}: its directory keeps disappearing")

    def _put(self, key: str, data: bytes, check: Callable[[], None]) -> str:
        def fill(f: IO[bytes]) -> str:
            f.write(data)
            return _md5_hex(data)

        return self._write(key, fill, check)

    # -- the ObjectStore contract ------------------------------------------------

    def put(self, key: str, data: bytes) -> str:
        """Atomically write ``data``; return the new ETag."""
        return self._put(key, data, lambda: None)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Write only if the current ETag is ``etag``; raise PreconditionFailed otherwise."""
        path = self._path(key)

        def check() -> None:
            current = self._current_etag(path)
            if current != etag.strip('"'):
                raise PreconditionFailed(
                    f"put_if_match {key}: current ETag is {current}, expected {etag}"
                )

        return self._put(key, data, check)

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Write only if ``key`` does not exist; raise PreconditionFailed otherwise."""
        path = self._path(key)

        def check() -> None:
            if path.exists():
                raise PreconditionFailed(f"put_if_absent {key}: object exists")

        return self._put(key, data, check)

    def get(self, key: str) -> Blob:
        """Read a whole object; raise NotFound."""
        blob = self.get_if_changed(key, None)
        assert blob is not None
        return blob

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        """Conditional GET: ``None`` when the ETag still matches, else the new blob."""
        path = self._path(key)
        try:
            # One open file: the ETag and the bytes come from the same inode even
            # if a writer replaces the key meanwhile.
            with path.open("rb") as f:
                current = self._etag_of(f)
                if etag is not None and current == etag.strip('"'):
                    return None
                return Blob(data=f.read(), etag=current)
        except (FileNotFoundError, IsADirectoryError) as err:
            raise NotFound(f"{self.url}/{key} does not exist") from err

    def head(self, key: str) -> ObjectInfo:
        """Size and ETag without the body; raise NotFound."""
        path = self._path(key)
        try:
            with path.open("rb") as f:
                st = os.fstat(f.fileno())
                return ObjectInfo(key, st.st_size, self._etag_of(f), st.st_mtime)
        except (FileNotFoundError, IsADirectoryError) as err:
            raise NotFound(f"{self.url}/{key} does not exist") from err

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """All objects under ``prefix`` in key order (byte order, as S3 lists), after
        ``start_after`` when given."""
        # Only walk the directory the prefix names; its last segment is a name prefix.
        if prefix.split("/", maxsplit=1)[0] == RESERVED_DIR:
            return
        base = prefix.rpartition("/")[0]
        start = self.root.joinpath(*base.split("/")) if base else self.root
        keys: builtins.list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel = os.path.relpath(dirpath, self.root)
            if rel == ".":
                dirnames[:] = [d for d in dirnames if d != RESERVED_DIR]
                rel_prefix = ""
            else:
                rel_prefix = rel.replace(os.sep, "/") + "/"
            keys.extend(k for n in filenames if (k := rel_prefix + n).startswith(prefix))
        # A depth-first walk is not key order ("a-b" < "a/c"), so sort whole keys;
        # code-point order of str equals S3's UTF-8 byte order.
        for key in sorted(keys):
            if start_after is not None and key <= start_after:
                continue
            try:
                yield self.head(key)
            except NotFound:
                continue  # deleted since the walk, as it could be between S3 pages

    def delete_many(self, keys: builtins.list[str]) -> None:
        """Delete keys; missing keys are not an error. Empty directories are pruned."""
        for key in keys:
            path = self._path(key)
            with self._locked(key):
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
            self._prune(path.parent)

    def _prune(self, directory: Path) -> None:
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    return
                raise
            directory = directory.parent

    def upload_file(self, key: str, path: Path, *, on_bytes: ByteCallback | None = None) -> str:
        """Copy a local file in, hashing as it goes; return its SHA-256 hex."""
        sha = hashlib.sha256()

        def fill(f: IO[bytes]) -> str:
            md5 = _md5()
            with path.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    f.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            return md5.hexdigest()

        self._write(key, fill, lambda: None)
        return sha.hexdigest()

    def download_file(
        self,
        key: str,
        path: Path,
        size: int,
        sha256: str,
        *,
        on_bytes: ByteCallback | None = None,
    ) -> None:
        """Copy out to ``path`` verifying size and SHA-256.

        Raises ChecksumMismatch (and leaves no file at ``path``) when they differ.
        """
        try:
            src = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError) as err:
            raise NotFound(f"{self.url}/{key} does not exist") from err
        with src:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Same directory as ``path``, so the final rename is atomic.
            fd, tmp_name = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=".part"
            )
            tmp = Path(tmp_name)
            try:
                sha = hashlib.sha256()
                got = 0
                with os.fdopen(fd, "wb") as dst:
                    os.fchmod(dst.fileno(), _FILE_MODE)
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
                        sha.update(chunk)
                        got += len(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                    dst.flush()
                    os.fsync(dst.fileno())
                if got != size or sha.hexdigest() != sha256:
                    raise ChecksumMismatch(
                        f"{self.url}/{key}: expected {size} bytes sha256 {sha256}, "
                        f"got {got} bytes sha256 {sha.hexdigest()}"
                    )
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
