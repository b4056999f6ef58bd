"""`offpost demo` as a newcomer runs it: the installed script, no settings, an empty folder.

It must end by itself with status 0, having published every post it scheduled,
and print the dashboard URL and an admin key, without leaving anything behind
in the folder it was started from.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from offpost.models.client import API_KEY_PREFIX

pytestmark = pytest.mark.timeout(300)

OFFPOST = Path(sys.executable).with_name("offpost")


def test_demo_publishes_every_post_and_ends_by_itself(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OFFPOST_")}
    # A setting the demo must not follow: it runs on embedded defaults, in its own folder.
    env["OFFPOST_DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"

    done = subprocess.run(
        [str(OFFPOST), "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    out = done.stdout
    dashboard = re.search(r"^dashboard: (http://127\.0\.0\.1:(\d+)/admin)\b", out, re.MULTILINE)
    assert dashboard, out
    admin_key = re.search(rf"^admin key: ({API_KEY_PREFIX}[A-Za-z0-9_-]{{20,}})$", out, re.M)
    assert admin_key, out

    outcomes = re.findall(r"^  (\w+)\s+(post_\w+)\s+(.+?)\s+due ", out, re.MULTILINE)
    labels = [label for _, _, label in outcomes]
    assert labels == [
        "one-off, now",
        "one-off, +5 s",
        "one-off, +10 s",
        "recurring #1",
        "recurring #2",
    ], out
    assert {status for status, _, _ in outcomes} == {"published"}, out
    assert len({post_id for _, post_id, _ in outcomes}) == 5
    assert "published 5 of 5 posts; the sandbox Page shows 5" in out
    assert out.rstrip().splitlines()[-1].startswith("offpost stopped")

    # Nothing left behind: not in the folder it ran from, not its own temporary folder,
    # and offpost no longer listens.
    assert list(tmp_path.iterdir()) == []
    folder = re.search(r"^\[1/6\] .* in (\S+)$", out, re.MULTILINE)
    assert folder, out
    assert not Path(folder.group(1)).exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", int(dashboard.group(2)))) != 0
