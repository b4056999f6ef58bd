"""``/v1/media``: uploads of photos and videos, in one request or resumable in chunks.

A file comes in one ``multipart/form-data`` request (``POST /v1/media``), or,
when it is large, in chunks: ``POST /v1/media/uploads`` announces its size,
then each ``PUT /v1/media/{id}/content`` with ``Content-Range`` appends the next
bytes. Either way the body is streamed to the media store while it is counted
and hashed: a file over its limit is refused with 413 as soon as it passes it
(and what was written is removed), and the type, size and duration are read
from the bytes (:mod:`offpost.media.inspect`), never taken from the client.

A client sees only its own media; another client's id answers 404.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from offpost.api.deps import ClientDep, NowDep, SessionDep, read_cursor
from offpost.api.problems import ProblemError, field_error
from offpost.media import limits
from offpost.media.inspect import (
    SNIFF_BYTES,
    MediaInfo,
    MediaInvalidError,
    check_limits,
    inspect_bytes,
    inspect_media,
    kind_of,
    sniff,
    unknown_type_error,
)
from offpost.media.store import MediaStore, StoreOffsetError, make_media_store
from offpost.media.uses import media_in_use
from offpost.models import IdPrefix, Media, MediaKind, MediaStatus, is_id, new_id
from offpost.posts.rules import encode_cursor, older_than, split_page
from offpost.views import UTCTime

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/media", tags=["media"])

T = TypeVar("T")

#: Bytes gathered before one write to the store (one object per write in S3).
PART_BYTES = 8 * 1024 * 1024
#: The largest text field of an upload form (``filename``) and all of a part's headers.
MAX_FIELD_BYTES = 1024
MAX_PART_HEADER_BYTES = 8 * 1024
#: Content types a stored media may have while its first bytes have not arrived.
PENDING_CONTENT_TYPE = "application/octet-stream"
_CONTENT_RANGE = re.compile(r"^bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def streams_its_body(path: str) -> bool:
    """Whether ``path``'s route reads and caps its own body as it streams it to the store
    (the app's body-size middleware must let such bodies through unread)."""
    if path == "/v1/media":
        return True
    parts = path.split("/")
    return len(parts) == 5 and parts[:3] == ["", "v1", "media"] and parts[4] == "content"


# --- schemas -----------------------------------------------------------------------------------


class MediaOut(BaseModel):
    """A media: what was found in its bytes, and how much of it has arrived."""

    id: str
    kind: MediaKind = Field(description="`video` until a resumable upload's first bytes say.")
    status: MediaStatus
    content_type: str = Field(
        description="The type read from the bytes (`image/jpeg`, `video/mp4`...); "
        "`application/octet-stream` until a resumable upload's first chunk."
    )
    filename: str | None
    size_bytes: int
    received_bytes: int
    sha256: str | None = Field(description="Hex SHA-256 of the whole file, once it is ready.")
    width: int | None
    height: int | None
    duration_ms: int | None
    fps: float | None = Field(default=None, description="A video's frames per second.")
    created_at: UTCTime

    @classmethod
    def of(cls, media: Media) -> MediaOut:
        return cls(
            id=media.id,
            kind=media.kind,
            status=media.status,
            content_type=media.content_type,
            filename=media.filename,
            size_bytes=media.size_bytes,
            received_bytes=media.received_bytes,
            sha256=media.sha256,
            width=media.width,
            height=media.height,
            duration_ms=media.duration_ms,
            fps=media.fps,
            created_at=media.created_at,
        )


class MediaUploadOut(MediaOut):
    """A resumable upload just started: send its bytes to ``upload_url``."""

    upload_url: str = Field(description="`PUT` the chunks here, with `Content-Range`.")


class MediaList(BaseModel):
    media: list[MediaOut]
    next_cursor: str | None


class UploadCreate(BaseModel):
    """The start of a resumable upload."""

    model_config = ConfigDict(extra="forbid")

    filename: str | None = Field(default=None, min_length=1, max_length=255)
    size_bytes: int = Field(
        ge=1,
        description=f"The whole file's size; at most {limits.MAX_VIDEO_BYTES} bytes (a "
        f"video), {limits.MAX_IMAGE_BYTES} for an image.",
    )


# --- shared ------------------------------------------------------------------------------------

_AUTH: dict[int | str, dict[str, Any]] = {401: {"description": "no or bad API key"}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such media for this client"},
    **_AUTH,
}
_TOO_LARGE = (
    f"payload_too_large: an image over {limits.MAX_IMAGE_BYTES} bytes or a video over "
    f"{limits.MAX_VIDEO_BYTES} bytes; nothing is kept"
)
_INVALID_FILE = (
    "invalid_request: not a JPEG, PNG, GIF, BMP, TIFF, MP4 or MOV file, a file that cannot "
    "be read as its type, or a video past Graph's limits (4 hours, aspect 9:16 to 16:9); "
    "`detail` names the limit, nothing is kept"
)


def get_media_store(request: Request) -> MediaStore:
    """The app's media store, made from its settings on first use."""
    store: MediaStore | None = getattr(request.app.state, "media_store", None)
    if store is None:
        store = make_media_store(request.app.state.settings)
        request.app.state.media_store = store
    return store


async def _sync(fn: Callable[..., T], *args: Any) -> T:
    return await run_in_threadpool(fn, *args)


def _not_found(media_id: str) -> ProblemError:
    return ProblemError("not_found", f"no media {media_id} for this client")


def _load(session: Session, client_id: str, media_id: str, *, lock: bool = False) -> Media:
    if not is_id(media_id, IdPrefix.MEDIA):
        raise _not_found(media_id)
    query = select(Media).where(Media.id == media_id, Media.client_id == client_id)
    if lock:
        query = query.with_for_update()
    media = session.scalars(query).one_or_none()
    if media is None:
        raise _not_found(media_id)
    return media


def _clean_filename(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = _CONTROL.sub("", value).strip()[:255]
    return cleaned or None


class _FileRefused(ProblemError):
    """The file itself is refused (too large, a type offpost does not take): nothing is kept."""


def _too_large(kind: MediaKind, size: int | None = None) -> ProblemError:
    limit = limits.MAX_IMAGE_BYTES if kind == MediaKind.IMAGE else limits.MAX_VIDEO_BYTES
    words = "4 MiB" if kind == MediaKind.IMAGE else "10 GiB"
    has = f"; this one has {size}" if size is not None else ""
    return _FileRefused(
        "payload_too_large", f"an {kind.value} may have at most {limit} bytes ({words}){has}"
    )


def _invalid(exc: MediaInvalidError) -> ProblemError:
    return _FileRefused(
        "invalid_request",
        f"{exc.field}: {exc.message}",
        errors=[{"field": exc.field, "message": exc.message}],
    )


class _Receiver:
    """Bytes of one media on their way to the store: counted, hashed, written in parts.

    The type is sniffed from the first bytes; from then on the count is held
    to that kind's limit and the stream is refused (413) as soon as it passes it.
    """

    def __init__(
        self,
        store: MediaStore,
        key: str,
        offset: int,
        *,
        keep_head: bool,
        announced: int | None = None,
    ) -> None:
        self.store = store
        self.announced = announced
        self.key = key
        self.offset = offset
        self.count = 0
        self.digest = hashlib.sha256()
        self.head = b""
        self.keep_head = keep_head
        self.content_type: str | None = None
        self.limit = limits.MAX_VIDEO_BYTES
        self._pending = bytearray()
        #: An image is small: kept in memory for inspection (no read back from the store).
        self.image = bytearray()

    def kind(self) -> MediaKind | None:
        return kind_of(self.content_type) if self.content_type else None

    async def feed(self, data: bytes) -> None:
        if not data:
            return
        if self.keep_head and self.content_type is None:
            self.head += data[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self._sniffed()
        self.count += len(data)
        if self.offset + self.count > self.limit:
            kind = self.kind() or MediaKind.VIDEO
            raise _too_large(kind)
        self.digest.update(data)
        if self.kind() == MediaKind.IMAGE or (self.keep_head and self.content_type is None):
            self.image += data
        self._pending += data
        if len(self._pending) >= PART_BYTES:
            await self.flush()

    def _sniffed(self) -> None:
        content_type = sniff(self.head)
        if content_type is None:
            raise _invalid(unknown_type_error())
        self.content_type = content_type
        if kind_of(content_type) == MediaKind.IMAGE:
            self.limit = limits.MAX_IMAGE_BYTES
            if self.announced is not None and self.announced > self.limit:
                raise _too_large(MediaKind.IMAGE, self.announced)
        else:
            self.image = bytearray()

    async def finish(self) -> None:
        whole = self.announced if self.announced is not None else self.count
        if (
            self.keep_head
            and self.content_type is None
            and self.head
            and len(self.head) >= min(SNIFF_BYTES, whole)
        ):
            self._sniffed()
        await self.flush()

    async def flush(self) -> None:
        if self._pending:
            data, self._pending = bytes(self._pending), bytearray()
            written = self.offset + self.count - len(data)
            try:
                await _sync(self.store.write, self.key, written, data)
            except StoreOffsetError as exc:  # another request wrote there meanwhile
                raise ProblemError(
                    "conflict",
                    f"the upload has received {exc.size} bytes (received_bytes): send the "
                    f"chunk that starts at byte {exc.size}",
                ) from exc


# --- one request -------------------------------------------------------------------------------


class _Form:
    """A streaming ``multipart/form-data`` parser: the ``file`` part goes to a receiver."""

    def __init__(self, boundary: bytes) -> None:
        self.events: list[tuple[str, bytes]] = []
        self._header_field = b""
        self._header_value = b""
        self._header_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_part_data": self._data,
                "on_part_end": lambda: self.events.append(("end", b"")),
                "on_header_field": self._field,
                "on_header_value": self._value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
            },
        )

    def _begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]
        self._count_header(end - start)

    def _value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._count_header(end - start)

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise field_error("body", "a part's headers are too long")

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise field_error("body", "each part needs Content-Disposition: form-data; name=...")
        name = options[b"name"]
        self.events.append(("begin", name))
        if name == b"file" and b"filename" in options:
            self.events.append(("part_filename", options[b"filename"]))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", data[start:end]))

    def write(self, chunk: bytes) -> list[tuple[str, bytes]]:
        self.parser.write(chunk)
        events, self.events = self.events, []
        return events


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise field_error("body", "send the file as multipart/form-data, in a field named file")
    return options[b"boundary"]


async def _receive_form(request: Request, receiver: _Receiver) -> tuple[bool, str | None]:
    """Stream the form's ``file`` into ``receiver``; whether it had one, and the filename."""
    form = _Form(_boundary(request))
    part: bytes | None = None
    seen: set[bytes] = set()
    text = bytearray()
    filename: str | None = None
    part_filename: str | None = None
    try:
        async for chunk in request.stream():
            for event, data in form.write(chunk):
                if event == "begin":
                    if data not in (b"file", b"filename"):
                        name = data.decode("utf-8", "replace")
                        raise field_error(name, "unknown field: send file and filename only")
                    if data in seen:
                        raise field_error(data.decode(), "given more than once")
                    seen.add(data)
                    part, text = data, bytearray()
                elif event == "part_filename":
                    part_filename = data.decode("utf-8", "replace")
                elif event == "data" and part == b"file":
                    await receiver.feed(data)
                elif event == "data":
                    text += data
                    if len(text) > MAX_FIELD_BYTES:
                        raise field_error("filename", "at most 255 characters")
                elif event == "end" and part == b"filename":
                    try:
                        filename = text.decode("utf-8")
                    except UnicodeDecodeError:
                        raise field_error("filename", "must be UTF-8 text") from None
                    if len(filename) > 255:
                        raise field_error("filename", "at most 255 characters")
        form.parser.finalize()
    except ClientDisconnect:
        raise field_error("body", "the upload was interrupted") from None
    except ProblemError:
        raise
    except Exception as exc:  # python-multipart's errors: a body that is not a form
        raise field_error("body", f"not a valid multipart/form-data body ({exc})") from exc
    await receiver.finish()
    return b"file" in seen, filename or part_filename


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=MediaOut,
    summary="Upload a photo or a video in one request",
    description="A `multipart/form-data` body with the file in the field `file` and, "
    "optionally, a `filename` (for people; the file's own name otherwise). The type is read "
    "from the bytes. Use `POST /v1/media/uploads` for large videos, in chunks.",
    responses={413: {"description": _TOO_LARGE}, 422: {"description": _INVALID_FILE}, **_AUTH},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "filename": {"type": "string", "maxLength": 255},
                        },
                    }
                }
            },
        }
    },
)
async def upload_media(
    request: Request, client: ClientDep, session: SessionDep, now: NowDep
) -> Response:
    store = get_media_store(request)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.MAX_VIDEO_BYTES + 64 * 1024:
        raise _too_large(MediaKind.VIDEO, int(length))
    media_id = new_id(IdPrefix.MEDIA)
    receiver = _Receiver(store, media_id, 0, keep_head=True)
    kept = False
    try:
        has_file, filename = await _receive_form(request, receiver)
        if not has_file:
            raise field_error("file", "the form has no file field")
        if receiver.count == 0:
            raise field_error("file", "the file is empty")
        info = await _sync(_inspect, store, media_id, receiver)
        media = Media(
            id=media_id,
            client_id=client.id,
            kind=info.kind,
            status=MediaStatus.READY,
            content_type=info.content_type,
            filename=_clean_filename(filename),
            size_bytes=receiver.count,
            received_bytes=receiver.count,
            sha256=receiver.digest.hexdigest(),
            storage_key=media_id,
            width=info.width,
            height=info.height,
            duration_ms=info.duration_ms,
            fps=info.fps,
            created_at=now,
            updated_at=now,
        )
        out = await _sync(_insert, session, media)
        kept = True
    finally:
        if not kept:
            await _sync(_forget, store, media_id)
    logger.info(
        "media uploaded",
        extra={"action": "media_uploaded", "client_id": client.id, "media_id": media_id},
    )
    return Response(out.model_dump_json(), status_code=201, media_type="application/json")


def _inspect(store: MediaStore, key: str, receiver: _Receiver) -> MediaInfo:
    """What the received file is, held to Graph's limits (422 naming the one it breaks)."""
    try:
        if receiver.kind() == MediaKind.IMAGE:
            info = inspect_bytes(bytes(receiver.image))
        else:
            info = inspect_media(lambda start, end: store.read(key, start, end), receiver.count)
    except MediaInvalidError as exc:
        raise _invalid(exc) from exc
    problems = check_limits(info, receiver.offset + receiver.count)
    if problems:
        raise ProblemError(
            "invalid_request",
            "file: " + "; ".join(problems),
            errors=[{"field": "file", "message": p} for p in problems],
        )
    return info


def _insert(session: Session, media: Media) -> MediaOut:
    session.add(media)
    session.commit()
    return MediaOut.of(media)


def _forget(store: MediaStore, key: str) -> None:
    try:
        store.delete(key)
    except Exception:
        logger.warning(
            "could not remove a refused upload's bytes",
            exc_info=True,
            extra={"action": "media_delete_failed", "media_id": key},
        )


# --- resumable ---------------------------------------------------------------------------------


@router.post(
    "/uploads",
    status_code=status.HTTP_201_CREATED,
    response_model=MediaUploadOut,
    summary="Start a resumable upload (large videos)",
    description="Announce the file's size; then `PUT` its bytes to `upload_url` in chunks, "
    "each with `Content-Range: bytes {start}-{end}/{size_bytes}`. The media is `uploading` "
    "until the last byte arrives, then `ready` (or refused with 422 and deleted).",
    responses={413: {"description": _TOO_LARGE}, 422: {"description": "invalid_request"}, **_AUTH},
)
def start_upload(
    body: UploadCreate, client: ClientDep, session: SessionDep, now: NowDep
) -> MediaUploadOut:
    if body.size_bytes > limits.MAX_VIDEO_BYTES:
        raise _too_large(MediaKind.VIDEO, body.size_bytes)
    media_id = new_id(IdPrefix.MEDIA)
    media = Media(
        id=media_id,
        client_id=client.id,
        # What it is is known from its first bytes; until then, as the large files are.
        kind=MediaKind.VIDEO,
        status=MediaStatus.UPLOADING,
        content_type=PENDING_CONTENT_TYPE,
        filename=_clean_filename(body.filename),
        size_bytes=body.size_bytes,
        received_bytes=0,
        storage_key=media_id,
        created_at=now,
        updated_at=now,
    )
    session.add(media)
    session.commit()
    return MediaUploadOut(
        **MediaOut.of(media).model_dump(), upload_url=f"/v1/media/{media_id}/content"
    )


def _parse_range(value: str | None, size: int) -> tuple[int, int]:
    """``bytes {start}-{end}/{total}`` as ``(start, end exclusive)``, or 422."""
    match = _CONTENT_RANGE.match(value or "")
    if match is None:
        raise field_error("Content-Range", "give bytes {start}-{end}/{size_bytes}")
    start, last, total = (int(g) for g in match.groups())
    if total != size:
        raise field_error("Content-Range", f"the total must be the upload's size_bytes ({size})")
    if start > last or last >= total:
        raise field_error("Content-Range", f"the bytes must lie within 0-{size - 1}, in order")
    return start, last + 1


class _Chunk:
    """What the row says before a chunk is written."""

    def __init__(self, media: MediaOut, received: int, write: bool) -> None:
        self.media = media
        self.received = received
        self.write = write


def _before_chunk(
    session: Session, store: MediaStore, client_id: str, media_id: str, start: int, end: int
) -> _Chunk:
    media = _load(session, client_id, media_id, lock=True)
    if media.status == MediaStatus.DELETED:
        raise ProblemError("conflict", f"media {media_id} was deleted")
    received = media.received_bytes
    if media.status == MediaStatus.UPLOADING:
        # A request cut off half-way may have stored more than the row says: the store counts.
        stored = store.size(media.storage_key)
        if stored != received:
            media.received_bytes = received = stored
    session.commit()
    if end <= received:  # sent again: these bytes are here already
        return _Chunk(MediaOut.of(media), received, write=False)
    if start != received:
        raise ProblemError(
            "conflict",
            f"the upload has received {received} of {media.size_bytes} bytes "
            f"(received_bytes): send the chunk that starts at byte {received}",
        )
    return _Chunk(MediaOut.of(media), received, write=True)


def _after_chunk(
    session: Session,
    store: MediaStore,
    client_id: str,
    media_id: str,
    receiver: _Receiver,
    now: Any,
) -> MediaOut:
    media = _load(session, client_id, media_id, lock=True)
    if receiver.content_type is not None and media.content_type == PENDING_CONTENT_TYPE:
        media.content_type = receiver.content_type
        media.kind = kind_of(receiver.content_type)
    media.received_bytes = store.size(media.storage_key)
    media.updated_at = now
    if media.received_bytes >= media.size_bytes:
        _complete(session, store, media, now)
    session.commit()
    return MediaOut.of(media)


def _complete(session: Session, store: MediaStore, media: Media, now: Any) -> None:
    """All bytes are in: inspect, check the limits, hash; ready, or 422 and deleted."""
    key = media.storage_key
    try:
        if media.received_bytes != media.size_bytes:
            raise field_error("body", "the upload holds more bytes than its size_bytes")
        info = inspect_media(lambda start, end: store.read(key, start, end), media.size_bytes)
        problems = check_limits(info, media.size_bytes)
        if problems:
            raise ProblemError(
                "invalid_request",
                "file: " + "; ".join(problems),
                errors=[{"field": "file", "message": p} for p in problems],
            )
        digest = hashlib.sha256()
        for offset in range(0, media.size_bytes, PART_BYTES):
            digest.update(store.read(key, offset, min(offset + PART_BYTES, media.size_bytes)))
    except (ProblemError, MediaInvalidError) as exc:
        _delete_upload(session, store, media, now)
        raise _invalid(exc) if isinstance(exc, MediaInvalidError) else exc from None
    media.kind, media.content_type = info.kind, info.content_type
    media.width, media.height, media.duration_ms = info.width, info.height, info.duration_ms
    media.fps = info.fps
    media.sha256 = digest.hexdigest()
    media.status = MediaStatus.READY


def _delete_upload(session: Session, store: MediaStore, media: Media, now: Any) -> None:
    """A refused upload: the row deleted (committed), its bytes removed."""
    media.status = MediaStatus.DELETED
    media.deleted_at = now
    session.commit()
    _forget(store, media.storage_key)


def _refuse_upload(
    session: Session, client_id: str, store: MediaStore, media_id: str, now: Any
) -> None:
    _delete_upload(session, store, _load(session, client_id, media_id, lock=True), now)


@router.put(
    "/{media_id}/content",
    response_model=MediaOut,
    summary="Send the next chunk of a resumable upload",
    description="The body is the chunk's bytes; `Content-Range: bytes {start}-{end}/{total}` "
    "(`end` inclusive, `total` the announced `size_bytes`). A chunk must start at "
    "`received_bytes`; one already received is answered 200 without being written again. "
    "The last chunk makes the media `ready`, or refuses it with 422 and deletes it.",
    responses={
        409: {
            "description": "conflict: the chunk does not start at received_bytes (`detail` "
            "says where to resume), or the media was deleted"
        },
        413: {"description": _TOO_LARGE},
        422: {"description": _INVALID_FILE + "; or a bad Content-Range"},
        **_NOT_FOUND,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def put_content(
    media_id: str,
    request: Request,
    client: ClientDep,
    session: SessionDep,
    now: NowDep,
    content_range: Annotated[
        str | None,
        Header(
            alias="Content-Range",
            description="`bytes {start}-{end}/{total}`, `end` inclusive.",
            pattern=r"^bytes [0-9]{1,19}-[0-9]{1,19}/[0-9]{1,19}$",
        ),
    ] = None,
) -> Response:
    store = get_media_store(request)
    media = await _sync(_load, session, client.id, media_id)
    start, end = _parse_range(content_range, media.size_bytes)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) != end - start:
        raise field_error("Content-Range", f"says {end - start} bytes, the body has {length}")
    before = await _sync(_before_chunk, session, store, client.id, media_id, start, end)
    if not before.write:
        return _media_json(before.media)
    receiver = _Receiver(store, media_id, start, keep_head=start == 0, announced=media.size_bytes)
    try:
        async for data in request.stream():
            room = end - start - receiver.count
            if len(data) > room:
                await receiver.feed(data[:room])
                raise field_error("Content-Range", f"says {end - start} bytes; the body is longer")
            await receiver.feed(data)
        await receiver.finish()
    except ClientDisconnect:
        await receiver.flush()
        raise field_error("body", "the upload was interrupted") from None
    except _FileRefused:
        # The file itself is refused (too large, not a type offpost takes): no use going on.
        await _sync(_refuse_upload, session, client.id, store, media_id, now)
        raise
    except ProblemError as exc:
        if exc.code != "conflict":  # keep what arrived in order: the client resumes after it
            await receiver.flush()
        await _sync(_after_chunk, session, store, client.id, media_id, receiver, now)
        raise
    if receiver.count < end - start:
        await _sync(_after_chunk, session, store, client.id, media_id, receiver, now)
        raise field_error("Content-Range", f"says {end - start} bytes; the body is shorter")
    out = await _sync(_after_chunk, session, store, client.id, media_id, receiver, now)
    return _media_json(out)


def _media_json(media: MediaOut) -> Response:
    return Response(media.model_dump_json(), media_type="application/json")


# --- reading and deleting ----------------------------------------------------------------------


@router.get(
    "",
    response_model=MediaList,
    summary="This client's media, newest first",
    description="Deleted media are left out unless `status=deleted` asks for them.",
    responses={422: {"description": "a bad filter, limit or cursor"}, **_AUTH},
)
def list_media(
    client: ClientDep,
    session: SessionDep,
    status_: Annotated[MediaStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> MediaList:
    after = read_cursor(cursor, IdPrefix.MEDIA)
    query = select(Media).where(Media.client_id == client.id)
    if status_ is None:
        query = query.where(Media.status != MediaStatus.DELETED)
    else:
        query = query.where(Media.status == status_)
    if after is not None:
        query = query.where(older_than(Media.created_at, Media.id, after))
    rows = session.scalars(
        query.order_by(Media.created_at.desc(), Media.id.desc()).limit(limit + 1)
    ).all()
    page, next_page = split_page(rows, limit, lambda m: (m.created_at, m.id))
    return MediaList(
        media=[MediaOut.of(m) for m in page],
        next_cursor=encode_cursor(next_page) if next_page else None,
    )


@router.get(
    "/{media_id}",
    response_model=MediaOut,
    summary="One media (a resumable upload's progress: received_bytes of size_bytes)",
    responses=_NOT_FOUND,
)
def get_media(media_id: str, client: ClientDep, session: SessionDep) -> MediaOut:
    return MediaOut.of(_load(session, client.id, media_id))


@router.delete(
    "/{media_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a media (its bytes are removed from the store)",
    description="Also cancels a resumable upload. Deleting a deleted media changes nothing.",
    responses={
        409: {"description": "conflict: a pending post or an active or paused schedule uses it"},
        **_NOT_FOUND,
    },
)
def delete_media(
    media_id: str, request: Request, client: ClientDep, session: SessionDep, now: NowDep
) -> Response:
    media = _load(session, client.id, media_id, lock=True)
    if media.status != MediaStatus.DELETED:
        if media_in_use(session, media.id):
            raise ProblemError(
                "conflict",
                f"media {media_id} is used by a pending post or an active schedule: "
                "cancel those first",
            )
        _delete_upload(session, get_media_store(request), media, now)
        logger.info(
            "media deleted",
            extra={"action": "media_deleted", "client_id": client.id, "media_id": media_id},
        )
    return Response(status_code=204)
