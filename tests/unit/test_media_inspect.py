"""What :mod:`offpost.media.inspect` reads from a file's bytes: type, size, duration, frame rate.

Images are made by hand (headers only, or with Pillow-free minimal bodies);
MP4 and MOV files are built from ISO base media boxes by :func:`mp4`, with the
``moov`` box before or after ``mdat``, so the parser is tested on both layouts
and on truncated and garbage input.
"""

from __future__ import annotations

import contextlib
import random
import struct
import zlib

import pytest

from offpost.media import limits
from offpost.media.inspect import (
    MediaInfo,
    MediaInvalidError,
    check_for_reel,
    check_limits,
    inspect_bytes,
    inspect_media,
    sniff,
)
from offpost.models.media import MediaKind

# --- files ---------------------------------------------------------------------------------------


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def full_box(kind: bytes, version: int, payload: bytes) -> bytes:
    return box(kind, bytes([version, 0, 0, 0]) + payload)


def large_box(kind: bytes, payload: bytes) -> bytes:
    """A box with a 64-bit size (``size == 1``)."""
    return struct.pack(">I4sQ", 1, kind, 16 + len(payload)) + payload


IDENTITY = (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
ROTATE_90 = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)


def mp4(
    *,
    duration_ms: int = 10_000,
    width: int = 1080,
    height: int = 1920,
    fps: int = 30,
    moov_first: bool = True,
    version: int = 0,
    brand: bytes = b"isom",
    matrix: tuple[int, ...] = IDENTITY,
    video: bool = True,
    mdat_bytes: int = 2048,
) -> bytes:
    """An MP4 (or MOV, by ``brand``) whose boxes say the given duration, size and frame rate."""
    timescale = 1000
    duration = duration_ms
    if version == 1:
        mvhd = full_box(b"mvhd", 1, struct.pack(">QQIQ", 0, 0, timescale, duration) + bytes(80))
    else:
        mvhd = full_box(b"mvhd", 0, struct.pack(">IIII", 0, 0, timescale, duration) + bytes(80))
    tkhd_head = (
        struct.pack(">QQIIQ", 0, 0, 1, 0, duration)
        if version == 1
        else struct.pack(">IIIII", 0, 0, 1, 0, duration)
    )
    tkhd = full_box(
        b"tkhd",
        version,
        tkhd_head
        + bytes(8)
        + struct.pack(">hhhH", 0, 0, 0, 0)
        + struct.pack(">9i", *matrix)
        + struct.pack(">II", width << 16, height << 16),
    )
    media_scale = fps * 1000
    samples = max(1, duration_ms * fps // 1000)
    if version == 1:
        mdhd = full_box(
            b"mdhd", 1, struct.pack(">QQIQ", 0, 0, media_scale, samples * 1000) + bytes(4)
        )
    else:
        mdhd = full_box(
            b"mdhd", 0, struct.pack(">IIII", 0, 0, media_scale, samples * 1000) + bytes(4)
        )
    handler = b"vide" if video else b"soun"
    hdlr = full_box(b"hdlr", 0, struct.pack(">I4s", 0, handler) + bytes(12) + b"Video\x00")
    stts = full_box(b"stts", 0, struct.pack(">III", 1, samples, 1000))
    minf = box(b"minf", box(b"stbl", stts))
    trak = box(b"trak", tkhd + box(b"mdia", mdhd + hdlr + minf))
    moov = box(b"moov", mvhd + trak)
    ftyp = box(b"ftyp", brand + struct.pack(">I", 0) + brand + b"mp41")
    mdat = large_box(b"mdat", bytes(mdat_bytes))
    return ftyp + (moov + mdat if moov_first else mdat + moov)


def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + bytes(65)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + dqt + sof + b"\xff\xda" + bytes(10) + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b";"


def bmp(width: int, height: int, *, core: bool = False) -> bytes:
    if core:
        dib = struct.pack("<IHHHH", 12, width, height, 1, 24)
    else:
        dib = struct.pack("<IiiHHI", 40, width, height, 1, 24, 0) + bytes(20)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib), 0, 0, 14 + len(dib)) + dib


TIFF = b"II*\x00" + struct.pack("<I", 8) + bytes(32)


# --- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type", "size"),
    [
        (png(640, 480), "image/png", (640, 480)),
        (jpeg(1200, 800), "image/jpeg", (1200, 800)),
        (gif(32, 16), "image/gif", (32, 16)),
        (bmp(100, -50), "image/bmp", (100, 50)),  # a negative height: stored top-down
        (bmp(7, 9, core=True), "image/bmp", (7, 9)),
        (TIFF, "image/tiff", (None, None)),
    ],
)
def test_each_image_type_is_found_with_its_size(
    data: bytes, content_type: str, size: tuple[int | None, int | None]
) -> None:
    info = inspect_bytes(data)
    assert info.content_type == content_type
    assert info.kind == MediaKind.IMAGE
    assert (info.width, info.height) == size
    assert info.duration_ms is None


def test_the_type_comes_from_the_bytes_not_a_name() -> None:
    assert sniff(b"MM\x00*" + bytes(60)) == "image/tiff"
    assert sniff(b"<html><body>not a picture</body></html>" + bytes(30)) is None
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") is None  # WebP: Graph does not list it


def test_a_jpeg_with_fill_bytes_and_restart_markers_is_read() -> None:
    data = jpeg(300, 200)
    data = data[:2] + b"\xff\xff\xd0" + data[2:]  # a fill byte, then RST0 (no length)
    assert (inspect_bytes(data).width, inspect_bytes(data).height) == (300, 200)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # JPEG cut before its frame header
        b"\xff\xd8\xff\xda" + bytes(20),  # scan data with no frame header
        b"\x89PNG\r\n\x1a\n" + bytes(8),  # PNG without IHDR
        b"GIF89a\x01",  # GIF cut in its header
        png(0, 10),  # no pixels
    ],
)
def test_broken_images_are_refused_clearly(data: bytes) -> None:
    with pytest.raises(MediaInvalidError) as caught:
        inspect_bytes(data)
    assert caught.value.field == "file"
    assert caught.value.message


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", bytes(100), b"%PDF-1.7\n" + bytes(100), b"ID3\x04" + bytes(100)],
)
def test_unknown_types_are_refused_naming_what_is_accepted(data: bytes) -> None:
    with pytest.raises(MediaInvalidError, match="JPEG, PNG, GIF, BMP or TIFF"):
        inspect_bytes(data)


# --- videos --------------------------------------------------------------------------------------


@pytest.mark.parametrize("moov_first", [True, False])
@pytest.mark.parametrize("version", [0, 1])
def test_an_mp4_gives_its_duration_size_and_frame_rate(moov_first: bool, version: int) -> None:
    data = mp4(
        duration_ms=12_500, width=1080, height=1920, fps=30, moov_first=moov_first, version=version
    )
    info = inspect_bytes(data)
    assert info == MediaInfo("video/mp4", MediaKind.VIDEO, 1080, 1920, 12_500, fps=30.0)


def test_a_mov_is_quicktime() -> None:
    assert inspect_bytes(mp4(brand=b"qt  ")).content_type == "video/quicktime"


def test_heif_images_are_not_videos() -> None:
    with pytest.raises(MediaInvalidError):
        inspect_bytes(mp4(brand=b"heic"))


def test_a_rotated_track_is_measured_as_shown() -> None:
    info = inspect_bytes(mp4(width=1920, height=1080, matrix=ROTATE_90))
    assert (info.width, info.height) == (1080, 1920)


def test_the_moov_at_the_end_is_found_with_bounded_reads() -> None:
    """Only box headers are read up to the moov box: never the mdat's bytes."""
    data = mp4(moov_first=False, mdat_bytes=5_000_000)
    reads: list[tuple[int, int]] = []

    def read(start: int, end: int) -> bytes:
        reads.append((start, end))
        return data[start:end]

    info = inspect_media(read, len(data))
    assert info.duration_ms == 10_000
    assert sum(end - start for start, end in reads) < 10_000
    assert max(end - start for start, end in reads) < 2_000


@pytest.mark.parametrize("moov_first", [True, False])
def test_a_truncated_video_is_refused(moov_first: bool) -> None:
    data = mp4(moov_first=moov_first)
    with pytest.raises(MediaInvalidError, match=r"truncated|damaged|no moov"):
        inspect_bytes(data[: len(data) - 100])


def test_a_video_without_a_video_track_is_refused() -> None:
    with pytest.raises(MediaInvalidError, match="no video track"):
        inspect_bytes(mp4(video=False))


def test_a_video_without_a_duration_is_refused() -> None:
    with pytest.raises(MediaInvalidError, match="duration"):
        inspect_bytes(mp4(duration_ms=0))


@pytest.mark.parametrize("seed", range(20))
def test_garbage_after_a_valid_ftyp_never_crashes(seed: int) -> None:
    """Random bytes where the boxes belong: MediaInvalidError, or a result; never another error."""
    rng = random.Random(seed)
    data = bytearray(mp4())
    for _ in range(30):
        position = rng.randrange(24, len(data))
        data[position] = rng.randrange(256)
    with contextlib.suppress(MediaInvalidError):
        inspect_bytes(bytes(data))


# --- limits --------------------------------------------------------------------------------------


def test_graph_limits_name_the_limit() -> None:
    image = MediaInfo("image/png", MediaKind.IMAGE, 10, 10)
    assert check_limits(image, limits.MAX_IMAGE_BYTES) == []
    [problem] = check_limits(image, limits.MAX_IMAGE_BYTES + 1)
    assert str(limits.MAX_IMAGE_BYTES) in problem
    long = MediaInfo("video/mp4", MediaKind.VIDEO, 1920, 1080, limits.MAX_VIDEO_DURATION_MS + 1)
    [problem] = check_limits(long, 1000)
    assert "4 hours" in problem
    wide = MediaInfo("video/mp4", MediaKind.VIDEO, 3000, 1000, 1000)
    [problem] = check_limits(wide, 1000)
    assert "9:16 and 16:9" in problem


def test_a_good_reel_passes() -> None:
    info = inspect_bytes(mp4(duration_ms=15_000, width=1080, height=1920, fps=30))
    assert check_for_reel(info) == []


@pytest.mark.parametrize(
    ("video", "words"),
    [
        ({"duration_ms": 2_000}, "too short"),
        ({"duration_ms": 91_000}, "too long"),
        ({"width": 1920, "height": 1080}, "not 9:16"),
        ({"width": 450, "height": 800}, "too small"),
        ({"fps": 15}, "frame rate"),
        ({"fps": 120}, "frame rate"),
    ],
)
def test_reel_problems_are_said_in_words(video: dict[str, int], words: str) -> None:
    values = {"duration_ms": 10_000, "width": 1080, "height": 1920, "fps": 30} | video
    info = inspect_bytes(mp4(**values))
    problems = check_for_reel(info)
    assert len(problems) == 1, problems
    assert words in problems[0]


def test_a_reel_from_a_stored_row_checks_the_frame_rate_it_is_given() -> None:
    info = MediaInfo("video/mp4", MediaKind.VIDEO, 1080, 1920, 10_000)
    assert check_for_reel(info) == []
    assert "frame rate" in check_for_reel(info, fps=12.0)[0]
    assert check_for_reel(MediaInfo("image/png", MediaKind.IMAGE, 1080, 1920)) == [
        "a Reel must be a video"
    ]
