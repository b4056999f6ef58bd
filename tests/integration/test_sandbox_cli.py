"""``offpost sandbox --port P`` as a user runs it: announces itself, answers, stops cleanly."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

OFFPOST = Path(sys.executable).with_name("offpost")


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_sandbox_serves_and_stops_on_signal(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("OFFPOST_")}
    proc = subprocess.Popen(
        [str(OFFPOST), "sandbox", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        out: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
        announced = []
        deadline = time.monotonic() + 15
        while not any("app id" in line for line in announced):
            assert time.monotonic() < deadline, f"no announcement; got {announced!r}"
            try:
                announced.append(out.get(timeout=0.2))
            except queue.Empty:
                assert proc.poll() is None, f"exited early with {proc.returncode}: {announced!r}"
        text = "".join(announced)
        assert f"http://127.0.0.1:{port}" in text
        app_id = next(line for line in announced if "app id" in line).split()[-1]
        assert app_id.isdigit()

        reply = httpx.get(f"http://127.0.0.1:{port}/v26.0/me", timeout=5)
        assert reply.status_code == 400
        assert reply.json()["error"]["code"] == 2500
        assert reply.headers["facebook-api-version"] == "v26.0"

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
