"""Media files for the tests: images and MP4s made from their bytes, and a local HTTP
server that hands them out by URL, as a client's CDN would to Graph."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import struct
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IDENTITY = (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full_box(kind: bytes, version: int, payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", version << 24) + payload)


def mp4(
    *,
    duration_ms: int = 10_000,
    width: int = 1080,
    height: int = 1920,
    fps: int = 30,
    mdat_bytes: int = 2048,
) -> bytes:
    """An MP4 whose boxes say this duration, size and frame rate; its ``mdat`` is random,
    so that two files never share a checksum."""
    timescale = 1000
    mvhd = full_box(b"mvhd", 0, struct.pack(">IIII", 0, 0, timescale, duration_ms) + bytes(80))
    tkhd = full_box(
        b"tkhd",
        0,
        struct.pack(">IIIII", 0, 0, 1, 0, duration_ms)
        + bytes(8)
        + struct.pack(">hhhH", 0, 0, 0, 0)
        + struct.pack(">9i", *IDENTITY)
        + struct.pack(">II", width << 16, height << 16),
    )
    samples = max(1, duration_ms * fps // 1000)
    mdhd = full_box(b"mdhd", 0, struct.pack(">IIII", 0, 0, fps * 1000, samples * 1000) + bytes(4))
    hdlr = full_box(b"hdlr", 0, struct.pack(">I4s", 0, b"vide") + bytes(12) + b"Video\x00")
    stts = full_box(b"stts", 0, struct.pack(">III", 1, samples, 1000))
    trak = box(b"trak", tkhd + box(b"mdia", mdhd + hdlr + box(b"minf", box(b"stbl", stts))))
    ftyp = box(b"ftyp", b"isom" + struct.pack(">I", 0) + b"isommp41")
    return ftyp + box(b"moov", mvhd + trak) + box(b"mdat", secrets.token_bytes(mdat_bytes))


def png(width: int = 64, height: int = 48) -> bytes:
    """A PNG of this size (its pixels are not drawn; a random chunk makes each one unique)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    unique = chunk(b"tEXt", b"id\x00" + secrets.token_hex(8).encode())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + unique + chunk(b"IEND", b"")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileServer:
    """Serves the bytes put in it at ``{url}/{name}``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def put(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return f"{self.url}/{name}"


@contextlib.contextmanager
def serving_files() -> Iterator[FileServer]:
    server = FileServer()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
