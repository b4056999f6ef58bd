"""Where uploaded bytes live: a local folder, or an S3-compatible bucket.

A store keeps each media's bytes under a key offpost made (the media's id,
never a name a client sent) and grows them by appending: :meth:`MediaStore.write`
takes the offset it expects the key to have, so a chunk sent twice or out of
order is refused instead of corrupting the file. Byte ranges are read back
with :meth:`MediaStore.read` (a worker sends a large video to Graph chunk by
chunk); :func:`verify` and :func:`read_verified` check the SHA-256 recorded at
upload before anything is sent.

S3's multipart upload wants parts of at least 5 MB and cannot be read before
it is completed, so :class:`S3MediaStore` stores each appended chunk as an
object of its own, ``{key}/{offset:016d}``, and stitches ranges on reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import make_url

from offpost.errors import OffpostError

if TYPE_CHECKING:
    from offpost.models.media import Media
    from offpost.settings import Settings

logger = logging.getLogger(__name__)

#: Keys are ids offpost made: letters, digits, ``_`` and ``-`` only.
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: How much :func:`verify` and :func:`read_verified` read at a time.
VERIFY_CHUNK_BYTES = 8 * 1024 * 1024


class MediaStoreError(OffpostError):
    """The store failed (unreachable, refused): never carries a key or a secret."""


class StoreOffsetError(MediaStoreError):
    """A write at an offset other than the key's current size."""

    def __init__(self, key: str, offset: int, size: int) -> None:
        super().__init__(f"a write at offset {offset}, but {key} holds {size} bytes")
        self.key = key
        self.offset = offset
        self.size = size


class MediaCorruptError(OffpostError):
    """The stored bytes are not the ones uploaded (size or SHA-256 differ)."""


class MediaStore(Protocol):
    """Append-only files by key, read back by byte range."""

    def write(self, key: str, offset: int, data: bytes) -> None:
        """Append ``data`` to ``key``; :class:`StoreOffsetError` unless ``offset`` is its size."""

    def size(self, key: str) -> int:
        """How many bytes ``key`` holds (0 for a key never written)."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of ``key`` (``end`` None: to its end; fewer past its end)."""

    def delete(self, key: str) -> None:
        """Remove ``key``'s bytes; nothing happens for a key that holds none."""


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError("a media store key is an id: letters, digits, '_' and '-' only")
    return key


class LocalMediaStore:
    """Files in one folder, one per key, written under an exclusive ``flock``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).resolve()

    def _path(self, key: str) -> Path:
        path = (self.directory / check_key(key)).resolve()
        if not path.is_relative_to(self.directory) or path == self.directory:
            raise ValueError("a media store key must name a file inside the media folder")
        return path

    def write(self, key: str, offset: int, data: bytes) -> None:
        path = self._path(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size != offset:
                raise StoreOffsetError(key, offset, size)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return 0

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if end is not None and end <= start:
            return b""
        try:
            with self._path(key).open("rb") as file:
                file.seek(start)
                return file.read() if end is None else file.read(end - start)
        except FileNotFoundError:
            return b""

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


@dataclass(frozen=True)
class _Chunk:
    name: str
    offset: int
    size: int


class S3MediaStore:
    """Objects in an S3-compatible bucket: each appended chunk is ``{key}/{offset:016d}``.

    ``client`` is a boto3 S3 client. The bucket is created on the first write
    if it does not exist.
    """

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self._bucket_ready = False
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """Turn boto's errors into :class:`MediaStoreError` (with S3's error code, no secret)."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "unknown")
            raise MediaStoreError(f"the S3 media store refused to {what}: {code}") from exc
        except BotoCoreError as exc:
            raise MediaStoreError(
                f"the S3 media store could not {what}: {type(exc).__name__}"
            ) from exc

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        from botocore.exceptions import ClientError  # noqa: PLC0415

        with self._lock, self._failures("create the bucket"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                    raise
                try:
                    self.client.create_bucket(Bucket=self.bucket)
                except ClientError as again:
                    code = again.response.get("Error", {}).get("Code")
                    if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
                logger.info("created the media bucket", extra={"action": "media_bucket_created"})
            self._bucket_ready = True

    def _chunks(self, key: str) -> list[_Chunk]:
        """The key's chunk objects that follow each other from offset 0, in order."""
        prefix = f"{check_key(key)}/"
        found: list[_Chunk] = []
        with self._failures("list a media's chunks"):
            paginator = self.client.get_paginator("list_objects_v2")
            try:
                for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                    for item in page.get("Contents", []):
                        suffix = item["Key"][len(prefix) :]
                        if suffix.isdigit():
                            found.append(_Chunk(item["Key"], int(suffix), int(item["Size"])))
            except Exception as exc:
                if _code(exc) == "NoSuchBucket":
                    return []
                raise
        found.sort(key=lambda c: c.offset)
        chunks, position = [], 0
        for chunk in found:
            if chunk.offset != position:
                break  # a gap (or a leftover): only what follows on from 0 counts
            chunks.append(chunk)
            position += chunk.size
        return chunks

    def write(self, key: str, offset: int, data: bytes) -> None:
        self._ensure_bucket()
        size = sum(c.size for c in self._chunks(key))
        if size != offset:
            raise StoreOffsetError(key, offset, size)
        if not data:
            return
        with self._failures("store a chunk"):
            self.client.put_object(Bucket=self.bucket, Key=f"{key}/{offset:016d}", Body=data)

    def size(self, key: str) -> int:
        return sum(c.size for c in self._chunks(key))

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        parts = []
        for chunk in self._chunks(key):
            chunk_end = chunk.offset + chunk.size
            low = max(start, chunk.offset)
            high = chunk_end if end is None else min(end, chunk_end)
            if high <= low:
                continue
            with self._failures("read a chunk"):
                answer = self.client.get_object(
                    Bucket=self.bucket,
                    Key=chunk.name,
                    Range=f"bytes={low - chunk.offset}-{high - chunk.offset - 1}",
                )
                parts.append(answer["Body"].read())
        return b"".join(parts)

    def delete(self, key: str) -> None:
        prefix = f"{check_key(key)}/"
        with self._failures("delete a media's chunks"):
            paginator = self.client.get_paginator("list_objects_v2")
            names: list[str] = []
            try:
                for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                    names += [item["Key"] for item in page.get("Contents", [])]
            except Exception as exc:
                if _code(exc) == "NoSuchBucket":
                    return
                raise
            for name in names:
                self.client.delete_object(Bucket=self.bucket, Key=name)


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def default_media_dir(database_url: str) -> Path:
    """``offpost-media`` beside a SQLite database file, else in the working directory."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / "offpost-media"
    return Path("offpost-media").resolve()


def make_s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for the settings (path-style addressing, checksums only when needed)."""
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        # None: boto3's own lookup (environment, instance role).
        aws_access_key_id=secret(settings.s3_access_key_id),
        aws_secret_access_key=secret(settings.s3_secret_access_key),
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            # S3-compatible servers do not all know the newer default checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def make_media_store(settings: Settings) -> MediaStore:
    """The store the settings name (``media_store``): a folder, or an S3 bucket."""
    if settings.media_store == "s3":
        return S3MediaStore(make_s3_client(settings), settings.s3_bucket)
    directory = settings.media_dir or default_media_dir(settings.database_url)
    return LocalMediaStore(directory)


# --- reading what a media row describes ------------------------------------------------------


def _chunks_of(store: MediaStore, media: Media) -> Iterator[bytes]:
    for start in range(0, media.size_bytes, VERIFY_CHUNK_BYTES):
        end = min(start + VERIFY_CHUNK_BYTES, media.size_bytes)
        data = store.read(media.storage_key, start, end)
        if len(data) != end - start:
            raise MediaCorruptError(
                f"media {media.id}: the store holds fewer bytes than its {media.size_bytes}"
            )
        yield data


def _check(store: MediaStore, media: Media, digest: Any) -> None:
    if media.sha256 is None:
        raise MediaCorruptError(f"media {media.id} has no checksum: its upload is not complete")
    if store.size(media.storage_key) != media.size_bytes:
        raise MediaCorruptError(
            f"media {media.id}: the store does not hold its {media.size_bytes} bytes"
        )
    if digest.hexdigest() != media.sha256:
        raise MediaCorruptError(f"media {media.id}: the stored bytes' SHA-256 differs")


def verify(store: MediaStore, media: Media) -> None:
    """Read the media's bytes in chunks; :class:`MediaCorruptError` unless their SHA-256
    (and size) are the ones recorded at upload."""
    digest = hashlib.sha256()
    for data in _chunks_of(store, media):
        digest.update(data)
    _check(store, media, digest)


def read_verified(store: MediaStore, media: Media) -> bytes:
    """The media's bytes, checked against the SHA-256 recorded at upload (photos: small)."""
    digest = hashlib.sha256()
    parts = []
    for data in _chunks_of(store, media):
        digest.update(data)
        parts.append(data)
    _check(store, media, digest)
    return b"".join(parts)


def read_chunk(store: MediaStore, media: Media, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the media; :class:`MediaCorruptError` if the store has fewer.

    A chunk is not checked against the whole file's SHA-256: :func:`verify` it first.
    """
    if not 0 <= start <= end <= media.size_bytes:
        raise ValueError(f"bytes {start}-{end} are outside media {media.id}")
    data = store.read(media.storage_key, start, end)
    if len(data) != end - start:
        raise MediaCorruptError(f"media {media.id}: the store holds fewer bytes than recorded")
    return data
