"""`offpost up` refuses a taken port with one line, before it creates anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from offpost.cli.main import main


def test_a_taken_port_is_one_line_and_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = CliRunner().invoke(main, ["up", "--port", str(port)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"offpost: port {port} on 127.0.0.1 (the API) is in use: stop what holds it or pick "
        "another with --port"
    ]
    assert list(tmp_path.iterdir()) == []
