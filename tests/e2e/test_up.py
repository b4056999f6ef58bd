"""A newcomer's first run: clone, the README's install, `offpost up`, publish, restart.

No settings, no Redis, no PostgreSQL, no Facebook app: `up` brings SQLite, an
in-memory broker, a real Celery worker, the dispatcher, the API and the Graph
sandbox. The test talks to it over HTTP only, as a client app would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.webhook_receiver import running_receiver

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


def wait_until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def quick_start_install() -> str:
    """The install half of the README's first command (the one that ends in `offpost up`)."""
    readme = (REPO / "README.md").read_text()
    command = readme.split("```sh\n", 1)[1].split("\n", 1)[0]
    install, separator, _ = command.partition(" && .venv/bin/offpost up")
    assert separator, f"the README's first command does not run offpost up: {command}"
    return install


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository cloned and installed as the README says, in a fresh virtualenv; its bin/."""
    base = tmp_path_factory.mktemp("newcomer")
    clone = base / "offpost"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OFFPOST_VENV", "VIRTUAL_ENV")}
    subprocess.run(
        ["bash", "-c", quick_start_install()], cwd=clone, env=env, check=True, timeout=500
    )
    return clone / ".venv" / "bin"


class Up:
    def __init__(self, bin_dir: Path, folder: Path, port: int) -> None:
        self.bin_dir, self.folder, self.port = bin_dir, folder, port
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OFFPOST_")}
        self.proc: subprocess.Popen[str] | None = None
        self.output = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "offpost"), "up", "--port", str(self.port)],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        api = f"http://127.0.0.1:{self.port}"

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                out, _ = self.proc.communicate()
                raise AssertionError(f"offpost up exited with {self.proc.returncode}:\n{out}")
            return httpx.get(f"{api}/readyz").status_code == 200

        wait_until(ready, 90, "/readyz")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=90)
        self.output += out
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as entered:
        yield entered


@pytest.fixture
def up(installed: Path, tmp_path: Path) -> Iterator[Up]:
    folder = tmp_path / "empty"
    folder.mkdir()
    runner = Up(installed, folder, free_port())
    yield runner
    runner.kill()


def test_up_publishes_on_the_sandbox_and_keeps_data_across_restarts(
    up: Up, installed: Path, stack: contextlib.ExitStack
) -> None:
    # The webhook receiver below listens on this machine: the operator allows that.
    up.env["OFFPOST_WEBHOOK_ALLOW_PRIVATE"] = "true"
    up.start()
    api = f"http://127.0.0.1:{up.port}"
    sandbox = f"http://127.0.0.1:{up.port + 1}"
    created = subprocess.run(
        [str(installed / "offpost"), "clients", "create", "newcomer"],
        cwd=up.folder,
        env=up.env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    user = httpx.post(f"{sandbox}/_sandbox/users", json={"pages": 1}).json()
    page_id = user["pages"][0]["id"]
    credential = httpx.post(
        f"{api}/v1/credentials", json={"access_token": user["access_token"]}, headers=key
    )
    assert credential.status_code == 201, credential.text
    receiver = stack.enter_context(running_receiver())
    hook = httpx.put(f"{api}/v1/webhook", json={"url": receiver.url}, headers=key)
    assert hook.status_code == 200, hook.text
    post = httpx.post(
        f"{api}/v1/posts",
        headers=key,
        json={
            "credential_id": credential.json()["id"],
            "target": page_id,
            "message": "hello, world",
        },
    )
    assert post.status_code == 201, post.text
    post_id = post.json()["id"]
    published = wait_until(
        lambda: (
            (r := httpx.get(f"{api}/v1/posts/{post_id}", headers=key).json())["status"]
            == "published"
            and r
        ),
        60,
        "the post to be published",
    )
    on_page = httpx.get(f"{sandbox}/_sandbox/pages/{page_id}/posts").json()["data"]
    assert [p["message"] for p in on_page] == ["hello, world"]
    assert published["graph_post_id"] == on_page[0]["id"]
    # Delivered by up's own webhook worker, on the deliveries' queue.
    [event] = wait_until(
        lambda: receiver.received("post.published"), 60, "the post.published webhook"
    )
    assert event.event["data"]["id"] == post_id

    assert up.stop() == 0
    assert "offpost is up" in up.output
    assert "admin API key" in up.output
    assert "offpost stopped" in up.output
    assert (up.folder / "offpost.db").stat().st_mode & 0o077 == 0  # private to its owner
    assert (up.folder / ".offpost-key").stat().st_mode & 0o077 == 0  # private to its owner

    up.start()
    again = httpx.get(f"{api}/v1/posts/{post_id}", headers=key)
    assert again.status_code == 200
    assert again.json()["status"] == "published"
    assert (
        httpx.get(f"{api}/v1/credentials/{credential.json()['id']}", headers=key).status_code == 200
    )
    assert up.stop() == 0
    # The admin key is shown on the first start only.
    assert up.output.count("admin API key") == 1
