"""``offpost demo``: a guided run on the Graph sandbox that ends by itself (the README).

It does what a newcomer would do by hand, and says so step by step:

1. starts ``offpost up --sandbox`` in a subprocess, in a fresh temporary folder
   (or ``--dir``), with no ``OFFPOST_*`` variable of the caller's environment,
   so that it can touch neither the user's ``./offpost.db`` nor a configured
   deployment; the API and the sandbox get free ports unless ``--port`` says;
2. creates an API client with ``offpost clients create`` (an operator's step);
3. then, over HTTP as a client app would: mints a sandbox user with a Page,
   submits the user's token (``POST /v1/credentials``), schedules three one-off
   posts (now, +5 s, +10 s) and a schedule of two occurrences one minute apart,
   the first at +12 s;
4. shows them being published (a Rich live table), checks them on the
   sandbox Page, prints the dashboard URL and the admin key, stops offpost
   with SIGINT as Ctrl-C would, and removes the temporary folder.

About 80 seconds in all, most of it waiting for the schedule's second
occurrence. It exits 1 with one line if anything fails (every post not
published included); the folder is then kept, and the line names offpost's log.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from offpost.cli.common import one_line_errors
from offpost.errors import OffpostError
from offpost.views import utc_z

if TYPE_CHECKING:
    import httpx
    from rich.console import RenderableType

#: offpost's own output, in the demo's folder.
LOG_FILE = "offpost-up.log"
#: How long offpost may take to answer /readyz.
START_TIMEOUT_S = 60.0
#: How long after its time a post may take to be published before the demo gives up.
PUBLISH_GRACE_S = 45.0
#: When the schedule starts, after the one-off posts; it recurs every minute, twice.
SCHEDULE_START_S = 12
SCHEDULE_RRULE = "FREQ=MINUTELY;COUNT=2"
ONE_OFF_DELAYS_S = (0, 5, 10)
TERMINAL = frozenset({"published", "failed", "canceled", "needs_reauth"})

_ADMIN_KEY = re.compile(r"^\s*(opk_[A-Za-z0-9_-]+)\s*$")
# Runs offpost's CLI with the interpreter of this one; -P keeps the folder off sys.path.
_OFFPOST = (sys.executable, "-P", "-c", "from offpost.cli.main import main; main()")


class DemoError(OffpostError):
    """A step of the demo failed."""


# --- pure helpers --------------------------------------------------------------------------


def find_admin_key(log: str) -> str | None:
    """The admin key ``offpost up`` announced on its first start, from its output."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if (
            "admin API key was created" in line
            and i + 1 < len(lines)
            and (match := _ADMIN_KEY.match(lines[i + 1]))
        ):
            return match.group(1)
    return None


def telling_line(log: str) -> str:
    """The line of offpost's output that best says why it stopped."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for wanted in (lambda line: line.startswith("offpost: "), lambda line: " ERROR " in line):
        if found := [line for line in lines if wanted(line)]:
            return found[-1]
    return lines[-1] if lines else "it printed nothing"


def clean_environment(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without offpost's settings: the demo runs on embedded defaults."""
    return {name: value for name, value in environ.items() if not name.startswith("OFFPOST_")}


def rfc3339(moment: datetime) -> str:
    return utc_z(moment)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _clock(moment: datetime) -> str:
    """``moment`` as the local wall-clock time of this machine, to the second."""
    return moment.astimezone().strftime("%H:%M:%S")


@dataclass
class Watched:
    """A post the demo waits for."""

    label: str
    post_id: str
    publish_at: datetime
    status: str = "scheduled"
    published_at: datetime | None = None
    graph_post_id: str | None = None
    error: str | None = None

    def update(self, body: dict[str, Any]) -> None:
        self.status = str(body["status"])
        self.graph_post_id = body.get("graph_post_id")
        if body.get("published_at"):
            self.published_at = parse_time(body["published_at"])
        if body.get("last_error"):
            self.error = str(body["last_error"].get("message") or body["last_error"].get("code"))

    def outcome(self) -> str:
        """One line about this post, for the summary."""
        due = _clock(self.publish_at)
        if self.status == "published" and self.published_at is not None:
            return (
                f"published  {self.post_id}  {self.label:<15} due {due}, published "
                f"{_clock(self.published_at)}, Graph id {self.graph_post_id}"
            )
        reason = f": {self.error}" if self.error else ""
        return f"{self.status:<10} {self.post_id}  {self.label:<15} due {due}{reason}"


def render(posts: list[Watched], now: datetime) -> RenderableType:
    """The live view: a bar of published posts and one row per post."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    done = sum(p.status == "published" for p in posts)
    table = Table(box=None, pad_edge=False)
    for column in ("post", "due", "status", "on the Page"):
        table.add_column(column)
    colours = {"published": "green", "failed": "red", "needs_reauth": "red", "queued": "yellow"}
    for post in posts:
        left_s = (post.publish_at - now).total_seconds()
        due = _clock(post.publish_at)
        if post.status == "scheduled" and left_s > 0:
            due += f" (in {left_s:.0f} s)"
        table.add_row(
            post.label,
            due,
            Text(post.status, style=colours.get(post.status, "")),
            post.graph_post_id or "",
        )
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=len(posts), completed=done, width=40), f"{done}/{len(posts)}")
    return Group(bar, table)


# --- running offpost -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Offpost:
    """``offpost up`` in a subprocess of its own session, output to a log file."""

    def __init__(self, folder: Path, api_port: int, sandbox_port: int) -> None:
        self.folder = folder
        self.api = f"http://127.0.0.1:{api_port}"
        self.sandbox = f"http://127.0.0.1:{sandbox_port}"
        self.ports = (api_port, sandbox_port)
        self.log_path = folder / LOG_FILE
        self.env = clean_environment(dict(os.environ))
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None

    def run(self, *args: str, timeout_s: float = 60) -> str:
        """Another offpost command in the same folder and environment; its stdout."""
        done = subprocess.run(  # noqa: S603 - our own interpreter and CLI, no shell
            [*_OFFPOST, *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DemoError(f"`offpost {' '.join(args)}` failed: {last}")
        return done.stdout

    def start(self, client: httpx.Client) -> None:
        import httpx

        self._log = self.log_path.open("a", encoding="utf-8")
        api_port, sandbox_port = self.ports
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI, no shell
            [
                *_OFFPOST,
                *("up", "--sandbox", "--port", str(api_port), "--sandbox-port", str(sandbox_port)),
            ],
            cwd=self.folder,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo, which then stops offpost
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"offpost up stopped at start: {self.last_log_line()}")
            try:
                if client.get(f"{self.api}/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DemoError(f"offpost up did not become ready within {START_TIMEOUT_S:.0f} s")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def last_log_line(self) -> str:
        """What offpost said last about why it stopped: its one-line error, else its last error."""
        return telling_line(self.log())

    def wait(self) -> None:
        """Until offpost stops by itself (or Ctrl-C interrupts the wait)."""
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> int | None:
        """SIGINT, as Ctrl-C would; SIGKILL if it has not stopped within a minute."""
        proc, self.proc = self.proc, None
        try:
            if proc is None:
                return None
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            return proc.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


# --- the guided run ------------------------------------------------------------------------


def _expect(response: httpx.Response, status: int, what: str) -> dict[str, Any]:
    if response.status_code != status:
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        raise DemoError(f"{what} answered {response.status_code}: {detail}")
    body: dict[str, Any] = response.json()
    return body


def _watch(
    client: httpx.Client, posts: list[Watched], show: Callable[[RenderableType], None]
) -> None:
    deadline = max(p.publish_at for p in posts) + timedelta(seconds=PUBLISH_GRACE_S)
    while True:
        for post in posts:
            if post.status not in TERMINAL:
                post.update(_expect(client.get(f"/v1/posts/{post.post_id}"), 200, "GET /v1/posts"))
        now = datetime.now(UTC)
        show(render(posts, now))
        if all(p.status in TERMINAL for p in posts) or now > deadline:
            return
        time.sleep(0.5)


def guided_run(offpost: Offpost, say: Callable[[str], None]) -> None:
    """Steps 1-6 with ``offpost`` (not started yet); raises :class:`DemoError`."""
    import httpx
    from rich.console import Console
    from rich.live import Live

    with httpx.Client(timeout=30) as http:
        say(
            "[1/6] starting offpost (API, dispatcher, Celery worker, Graph sandbox) "
            f"in {offpost.folder}"
        )
        offpost.start(http)
        admin_key = find_admin_key(offpost.log())
        say(f"      ready: API at {offpost.api}, Graph sandbox at {offpost.sandbox}")

        name = f"demo-{secrets.token_hex(3)}"
        key = offpost.run("clients", "create", name).strip().splitlines()[-1]
        say(f"[2/6] created the API client {name!r} (`offpost clients create {name}`)")

    with httpx.Client(
        base_url=offpost.api, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as api:
        user = _expect(
            api.post(f"{offpost.sandbox}/_sandbox/users", json={"name": "Dana Demo", "pages": 1}),
            201,
            "the sandbox's POST /_sandbox/users",
        )
        page = user["pages"][0]
        say(
            f"[3/6] the sandbox minted the user {user.get('name', 'Dana Demo')!r} with the "
            f"Page {page['name']!r} ({page['id']}) and a short-lived token"
        )

        credential = _expect(
            api.post("/v1/credentials", json={"access_token": user["access_token"]}),
            201,
            "POST /v1/credentials",
        )
        say(
            f"[4/6] submitted the token once: credential {credential['id']} holds a long-lived "
            "token, stored encrypted"
        )

        now = datetime.now(UTC).replace(microsecond=0)
        watched: list[Watched] = []
        for delay_s in ONE_OFF_DELAYS_S:
            label = "one-off, now" if not delay_s else f"one-off, +{delay_s} s"
            body: dict[str, Any] = {
                "credential_id": credential["id"],
                "target": page["id"],
                "message": f"Hello from the offpost demo ({label})",
            }
            if delay_s:
                body["publish_at"] = rfc3339(now + timedelta(seconds=delay_s))
            post = _expect(api.post("/v1/posts", json=body), 201, "POST /v1/posts")
            watched.append(Watched(label, post["id"], parse_time(post["publish_at"])))
        schedule = _expect(
            api.post(
                "/v1/schedules",
                json={
                    "credential_id": credential["id"],
                    "target": page["id"],
                    "message": "A recurring offpost demo post ({time} UTC)",
                    "rrule": SCHEDULE_RRULE,
                    "timezone": "UTC",
                    "start_at": rfc3339(now + timedelta(seconds=SCHEDULE_START_S)),
                },
            ),
            201,
            "POST /v1/schedules",
        )
        occurrences = _expect(
            api.get("/v1/posts", params={"schedule_id": schedule["id"]}),
            200,
            "GET /v1/posts?schedule_id=",
        )["posts"]
        for n, post in enumerate(sorted(occurrences, key=lambda p: p["publish_at"]), start=1):
            watched.append(Watched(f"recurring #{n}", post["id"], parse_time(post["publish_at"])))
        say(
            f"[5/6] scheduled {len(ONE_OFF_DELAYS_S)} one-off posts (now, +5 s, +10 s) and the "
            f"schedule {schedule['id']} ({SCHEDULE_RRULE}, from +{SCHEDULE_START_S} s): "
            f"{len(occurrences)} occurrences"
        )

        say("[6/6] watching them being published (the last one about a minute from now)")
        console = Console()
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            _watch(api, watched, live.update)
        if not console.is_terminal:
            console.line()  # a file gets the last table without its final newline

        on_page = _expect(
            api.get(f"{offpost.sandbox}/_sandbox/pages/{page['id']}/posts"),
            200,
            "the sandbox's GET /_sandbox/pages/{id}/posts",
        )["data"]
        for each in watched:
            say(f"  {each.outcome()}")
        published = sum(p.status == "published" for p in watched)
        say(f"published {published} of {len(watched)} posts; the sandbox Page shows {len(on_page)}")
        say(f"dashboard: {offpost.api}/admin (sign in with the admin key)")
        if admin_key:
            say(f"admin key: {admin_key}")
        else:
            say("admin key: shown when this folder's offpost first started (an admin exists)")
        if published != len(watched):
            stuck = next(p for p in watched if p.status != "published")
            raise DemoError(
                f"{len(watched) - published} posts were not published "
                f"({stuck.post_id} is {stuck.status}{': ' + stuck.error if stuck.error else ''})"
            )


@click.command()
@click.option(
    "--port",
    default=None,
    type=click.IntRange(1, 65534),
    help="API port; the sandbox gets the next one [default: free ports].",
)
@click.option(
    "--dir",
    "folder",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep offpost's data here (e.g. '.') instead of in a temporary folder removed at the end.",
)
@click.option(
    "--keep-running", is_flag=True, help="Leave offpost running after the demo, until Ctrl-C."
)
@one_line_errors
def demo(port: int | None, folder: Path | None, keep_running: bool) -> None:
    """A guided run on the Graph sandbox: schedules posts and shows them being published.

    Runs `offpost up` in a temporary folder (nothing of ./offpost.db or of
    OFFPOST_* settings is used), then acts as a client app over HTTP. About 80 s.
    """
    temporary = folder is None
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="offpost-demo-"))
    else:
        folder.mkdir(parents=True, exist_ok=True)
    api_port = port or free_port()
    sandbox_port = port + 1 if port else free_port()
    offpost = Offpost(folder.resolve(), api_port, sandbox_port)
    started = time.monotonic()
    try:
        guided_run(offpost, click.echo)
    except KeyboardInterrupt:
        offpost.stop()
        raise DemoError(f"interrupted; offpost is stopped, its log is {offpost.log_path}") from None
    except BaseException as exc:
        offpost.stop()
        if isinstance(exc, DemoError):
            raise DemoError(f"{exc}; offpost's log: {offpost.log_path}") from None
        raise
    if keep_running:
        click.echo(f"offpost keeps running at {offpost.api}: press Ctrl-C to stop it")
        with contextlib.suppress(KeyboardInterrupt):
            offpost.wait()
    status = offpost.stop()
    if status not in (0, None):
        raise DemoError(
            f"offpost up stopped with status {status}: {offpost.last_log_line()} "
            f"(log: {offpost.log_path})"
        )
    click.echo(f"offpost stopped; the demo took {time.monotonic() - started:.0f} s")
    _cleanup(folder, temporary)


def _cleanup(folder: Path, temporary: bool) -> None:
    if temporary:
        shutil.rmtree(folder, ignore_errors=True)
