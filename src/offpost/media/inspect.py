"""What an uploaded file is, from its bytes: type, dimensions, a video's duration and frame rate.

The type comes from the file's first bytes (magic numbers), never from the
content type or the file name the client sent. Images get their width and
height from their header where that is cheap (PNG, GIF, JPEG, BMP; a TIFF's
are left unknown). MP4 and QuickTime files are ISO base media files: a small
box parser reads the duration from ``moov/mvhd``, the size from the video
track's ``tkhd`` and the frame rate from its ``mdhd`` and ``stts``, through a
``read(start, end)`` callable, so that a ``moov`` at the end of a 10 GB file is
found by seeking, not by loading the file.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from offpost.errors import OffpostError
from offpost.media import limits
from offpost.models.media import MediaKind

#: ``read(start, end)``: the file's bytes ``[start, end)`` (fewer only past its end).
Reader = Callable[[int, int], bytes]

#: How many first bytes :func:`sniff` needs to tell every type apart.
SNIFF_BYTES = 64
#: The largest ``moov`` box read (its sample tables grow with the video's length).
MAX_MOOV_BYTES = 64 * 1024 * 1024
#: At most this many top-level boxes are walked (a real file has a handful).
MAX_TOP_LEVEL_BOXES = 10_000
#: ``ftyp`` brands of still images stored as ISO base media files (HEIF, AVIF): not videos.
_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
#: Box types that may open a QuickTime file written without ``ftyp``.
_QUICKTIME_FIRST_BOXES = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


class MediaInvalidError(OffpostError):
    """The file is not one offpost accepts, or cannot be read as what it claims to be."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`inspect_media` found in a file."""

    content_type: str
    kind: MediaKind
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    #: A video's average frame rate, when its sample table tells it.
    fps: float | None = None


def sniff(head: bytes) -> str | None:
    """The content type that the file's first bytes say, or None for a type offpost refuses."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"BM") and len(head) >= 18:
        return "image/bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if len(head) >= 12:
        box_type = head[4:8]
        if box_type == b"ftyp":
            brand = head[8:12]
            if brand in _IMAGE_BRANDS:
                return None
            return "video/quicktime" if brand == b"qt  " else "video/mp4"
        if box_type in _QUICKTIME_FIRST_BOXES:
            return "video/quicktime"
    return None


def kind_of(content_type: str) -> MediaKind:
    """Whether ``content_type`` (one :func:`sniff` returns) is an image or a video."""
    return MediaKind.VIDEO if content_type.startswith("video/") else MediaKind.IMAGE


def unknown_type_error() -> MediaInvalidError:
    return MediaInvalidError(
        "the file is not a type offpost accepts: images must be JPEG, PNG, GIF, BMP or TIFF, "
        "videos MP4 or MOV (the type is read from the file's bytes, not from its name)"
    )


def inspect_media(read: Reader, size: int) -> MediaInfo:
    """Type, dimensions and (for a video) duration and frame rate of the ``size``-byte file.

    Raises :class:`MediaInvalidError` for a type offpost refuses and for a file
    that cannot be read as its type.
    """
    content_type = sniff(read(0, min(size, SNIFF_BYTES)))
    if content_type is None:
        raise unknown_type_error()
    if kind_of(content_type) == MediaKind.VIDEO:
        return _inspect_video(read, size, content_type)
    # Images are small (MAX_IMAGE_BYTES): read the header area, more only for a JPEG.
    width, height = _image_size(content_type, read, size)
    return MediaInfo(content_type, MediaKind.IMAGE, width, height)


def inspect_bytes(data: bytes) -> MediaInfo:
    """:func:`inspect_media` of a file held in memory."""
    return inspect_media(lambda start, end: data[start:end], len(data))


# --- images ------------------------------------------------------------------------------------


def _image_size(content_type: str, read: Reader, size: int) -> tuple[int | None, int | None]:
    head = read(0, min(size, 64))
    name = content_type.removeprefix("image/").upper()
    try:
        if content_type == "image/png":
            if head[12:16] != b"IHDR":
                raise MediaInvalidError("the PNG file has no IHDR header")
            width, height = struct.unpack(">II", head[16:24])
        elif content_type == "image/gif":
            width, height = struct.unpack("<HH", head[6:10])
        elif content_type == "image/bmp":
            (header_size,) = struct.unpack("<I", head[14:18])
            if header_size == 12:  # BITMAPCOREHEADER
                width, height = struct.unpack("<HH", head[18:22])
            else:
                width, height = struct.unpack("<ii", head[18:26])
            width, height = abs(width), abs(height)  # a negative height is top-down
        elif content_type == "image/jpeg":
            width, height = _jpeg_size(read(0, size))
        else:  # TIFF: its size lives in an IFD anywhere in the file; not worth it
            return None, None
    except struct.error as exc:
        raise MediaInvalidError(f"the {name} file is truncated") from exc
    if width <= 0 or height <= 0:
        raise MediaInvalidError(f"the {name} file says it is {width}x{height} pixels")
    return int(width), int(height)


#: JPEG start-of-frame markers (all but DHT, JPG and DAC in 0xC0-0xCF).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise MediaInvalidError("the JPEG file is damaged (no marker where one belongs)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before it
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise MediaInvalidError("the JPEG file is damaged (a segment of length < 2)")
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise MediaInvalidError("the JPEG file has no frame header (it is damaged or truncated)")


# --- ISO base media files (MP4, MOV) ----------------------------------------------------------


@dataclass(frozen=True)
class _Box:
    type: bytes
    start: int
    #: Where the payload starts (after size, type and any 64-bit size).
    body: int
    end: int


def _header(data: bytes, pos: int, limit: int) -> _Box:
    """The box at ``data[pos:]`` whose parent ends at ``limit``."""
    if pos + 8 > limit:
        raise MediaInvalidError("the video's structure is damaged (a box header is cut off)")
    size, box_type = struct.unpack(">I4s", data[pos : pos + 8])
    body = pos + 8
    if size == 1:
        if pos + 16 > limit:
            raise MediaInvalidError("the video's structure is damaged (a box header is cut off)")
        (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
        body = pos + 16
    elif size == 0:
        size = limit - pos
    if size < body - pos or pos + size > limit:
        raise MediaInvalidError(
            f"the video's structure is damaged (box {_name(box_type)} does not fit its parent)"
        )
    return _Box(box_type, pos, body, pos + size)


def _children(data: bytes, parent: _Box) -> Iterator[_Box]:
    pos = parent.body
    while pos < parent.end:
        box = _header(data, pos, parent.end)
        yield box
        pos = box.end


def _child(data: bytes, parent: _Box, box_type: bytes) -> _Box | None:
    return next((b for b in _children(data, parent) if b.type == box_type), None)


def _name(box_type: bytes) -> str:
    return box_type.decode("latin-1").strip() or "?"


def _find_moov(read: Reader, size: int) -> bytes:
    """The ``moov`` box (header included), found by reading only the top-level box headers
    (all of them: a box that runs past the file's end means the file is truncated)."""
    pos = 0
    moov: bytes | None = None
    for _ in range(MAX_TOP_LEVEL_BOXES):
        if pos >= size:
            break
        head = read(pos, min(size, pos + 16))
        try:
            box = _header(head + b"\x00" * (16 - len(head)), 0, size - pos)
        except MediaInvalidError:
            raise MediaInvalidError(
                "the video is truncated or damaged (a top-level box runs past the file's end)"
            ) from None
        if box.type == b"moov" and moov is None:
            length = box.end - box.start
            if length > MAX_MOOV_BYTES:
                raise MediaInvalidError(
                    f"the video's moov box is larger than {MAX_MOOV_BYTES} bytes"
                )
            data = read(pos, pos + length)
            if len(data) != length:
                raise MediaInvalidError("the video is truncated (its moov box is cut off)")
            moov = data
        pos += box.end - box.start
    else:
        if pos < size:
            raise MediaInvalidError(
                f"the video has more than {MAX_TOP_LEVEL_BOXES} top-level boxes"
            )
    if moov is not None:
        return moov
    raise MediaInvalidError(
        "the video has no moov box (it is truncated, or not a complete MP4 or MOV file)"
    )


def _full_box(data: bytes, box: _Box, need_v0: int, need_v1: int) -> tuple[int, int]:
    """The version of the full box and where its fields start; checks they fit."""
    if box.body + 4 > box.end:
        raise MediaInvalidError(f"the video's {_name(box.type)} box is too short")
    version = data[box.body]
    need = need_v1 if version == 1 else need_v0
    if box.body + 4 + need > box.end:
        raise MediaInvalidError(f"the video's {_name(box.type)} box is too short")
    return version, box.body + 4


def _mvhd_duration_ms(data: bytes, mvhd: _Box) -> int:
    version, at = _full_box(data, mvhd, 16, 28)
    if version == 1:
        timescale, duration = struct.unpack(">IQ", data[at + 16 : at + 28])
        unknown = duration == 0xFFFF_FFFF_FFFF_FFFF
    else:
        timescale, duration = struct.unpack(">II", data[at + 8 : at + 16])
        unknown = duration == 0xFFFF_FFFF
    if timescale == 0 or duration == 0 or unknown:
        raise MediaInvalidError(
            "the video does not record its duration (fragmented MP4 is not supported)"
        )
    return int(duration * 1000 // timescale)


def _tkhd_size(data: bytes, tkhd: _Box) -> tuple[int, int]:
    """The track's presentation width and height, turned by a 90° or 270° matrix."""
    version, at = _full_box(data, tkhd, 80, 92)
    fields = at + (32 if version == 1 else 20) + 16  # times, ids, reserved, layer, volume
    matrix = struct.unpack(">9i", data[fields : fields + 36])
    width, height = struct.unpack(">II", data[fields + 36 : fields + 44])
    width, height = round(width / 65536), round(height / 65536)
    a, b = matrix[0], matrix[1]
    if a == 0 and b != 0:  # rotated by 90° or 270°: shown portrait when stored landscape
        width, height = height, width
    return width, height


def _handler(data: bytes, mdia: _Box) -> bytes | None:
    hdlr = _child(data, mdia, b"hdlr")
    if hdlr is None:
        return None
    _, at = _full_box(data, hdlr, 8, 8)
    return data[at + 4 : at + 8]


def _fps(data: bytes, mdia: _Box) -> float | None:
    mdhd = _child(data, mdia, b"mdhd")
    minf = _child(data, mdia, b"minf")
    stbl = _child(data, minf, b"stbl") if minf else None
    stts = _child(data, stbl, b"stts") if stbl else None
    if mdhd is None or stts is None:
        return None
    version, at = _full_box(data, mdhd, 16, 28)
    scale_at = at + (16 if version == 1 else 8)
    (timescale,) = struct.unpack(">I", data[scale_at : scale_at + 4])
    _, at = _full_box(data, stts, 4, 4)
    (entries,) = struct.unpack(">I", data[at : at + 4])
    if at + 4 + entries * 8 > stts.end:
        raise MediaInvalidError("the video's stts box is too short for its entries")
    samples = ticks = 0
    for i in range(entries):
        count, delta = struct.unpack(">II", data[at + 4 + i * 8 : at + 12 + i * 8])
        samples += count
        ticks += count * delta
    if timescale == 0 or samples == 0 or ticks == 0:
        return None
    return float(samples * timescale / ticks)


def _inspect_video(read: Reader, size: int, content_type: str) -> MediaInfo:
    data = _find_moov(read, size)
    moov = _header(data, 0, len(data))
    mvhd = _child(data, moov, b"mvhd")
    if mvhd is None:
        raise MediaInvalidError("the video has no mvhd box (its duration is unknown)")
    duration_ms = _mvhd_duration_ms(data, mvhd)
    for trak in _children(data, moov):
        if trak.type != b"trak":
            continue
        mdia = _child(data, trak, b"mdia")
        if mdia is None or _handler(data, mdia) != b"vide":
            continue
        tkhd = _child(data, trak, b"tkhd")
        if tkhd is None:
            raise MediaInvalidError("the video track has no tkhd box (its size is unknown)")
        width, height = _tkhd_size(data, tkhd)
        if width <= 0 or height <= 0:
            raise MediaInvalidError(f"the video track says it is {width}x{height} pixels")
        return MediaInfo(
            content_type, MediaKind.VIDEO, width, height, duration_ms, fps=_fps(data, mdia)
        )
    raise MediaInvalidError("the file has no video track")


# --- limits ------------------------------------------------------------------------------------


def check_limits(info: MediaInfo, size: int) -> list[str]:
    """What in ``info`` breaks Graph's limits for any post (docs/media.md), in words."""
    problems = []
    if info.kind == MediaKind.IMAGE:
        if size > limits.MAX_IMAGE_BYTES:
            problems.append(
                f"an image may have at most {limits.MAX_IMAGE_BYTES} bytes (4 MiB); "
                f"this one has {size}"
            )
        return problems
    if size > limits.MAX_VIDEO_BYTES:
        problems.append(
            f"a video may have at most {limits.MAX_VIDEO_BYTES} bytes (10 GiB); this one has {size}"
        )
    if info.duration_ms is not None and info.duration_ms > limits.MAX_VIDEO_DURATION_MS:
        problems.append(
            f"a video may last at most {limits.MAX_VIDEO_DURATION_MS} ms (4 hours); "
            f"this one lasts {info.duration_ms} ms"
        )
    if info.width and info.height:
        aspect = info.width / info.height
        # A hair of slack for sizes rounded to even numbers (1080x1921).
        if not limits.MIN_VIDEO_ASPECT * 0.99 <= aspect <= limits.MAX_VIDEO_ASPECT * 1.01:
            problems.append(
                "a video's aspect ratio must be between 9:16 and 16:9; "
                f"this one is {info.width}x{info.height}"
            )
    return problems


class ReelCandidate(Protocol):
    """What :func:`check_for_reel` reads: a :class:`~offpost.models.Media` row or a MediaInfo."""

    @property
    def kind(self) -> MediaKind: ...
    @property
    def width(self) -> int | None: ...
    @property
    def height(self) -> int | None: ...
    @property
    def duration_ms(self) -> int | None: ...
    @property
    def fps(self) -> float | None: ...


def check_for_reel(media: ReelCandidate, *, fps: float | None = None) -> list[str]:
    """Why ``media`` cannot be published as a Reel, in words (empty: it can).

    Reels last 3 to 90 s, are 9:16 and at least 540x960 pixels, at 24 to 60
    frames per second (``fps`` overrides the one ``media`` says).
    """
    if media.kind != MediaKind.VIDEO:
        return ["a Reel must be a video"]
    problems = []
    duration = media.duration_ms
    if duration is None:
        problems.append("the video's duration is unknown")
    elif not limits.REEL_MIN_DURATION_MS <= duration <= limits.REEL_MAX_DURATION_MS:
        too = "short" if duration < limits.REEL_MIN_DURATION_MS else "long"
        problems.append(
            f"too {too}: a Reel must last 3 to 90 seconds; this video lasts {duration / 1000:g} s"
        )
    width, height = media.width, media.height
    if not width or not height:
        problems.append("the video's size is unknown")
    else:
        aspect = width / height
        if abs(aspect - limits.REEL_ASPECT) > limits.REEL_ASPECT * limits.REEL_ASPECT_TOLERANCE:
            problems.append(
                f"not 9:16: a Reel must be 9:16 (portrait); this video is {width}x{height}"
            )
        if width < limits.REEL_MIN_WIDTH or height < limits.REEL_MIN_HEIGHT:
            problems.append(
                f"too small: a Reel must be at least {limits.REEL_MIN_WIDTH}x"
                f"{limits.REEL_MIN_HEIGHT} pixels; this video is {width}x{height}"
            )
    if fps is None:
        fps = media.fps
    if fps is not None and not (
        limits.REEL_MIN_FPS - limits.FPS_TOLERANCE
        <= fps
        <= limits.REEL_MAX_FPS + limits.FPS_TOLERANCE
    ):
        problems.append(
            f"frame rate: a Reel must have 24 to 60 frames per second; this video has {fps:.3g}"
        )
    return problems
