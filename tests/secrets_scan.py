"""A pytest plugin: no secret that the tests create may appear in a log line of the run.

It learns the secrets as they are made, wherever they are made:

- every token the in-process Graph sandbox mints (user, long-lived, Page and app
  tokens), every app secret it registers and every OAuth code it issues;
- every encryption key the tests make (through offpost's own
  :func:`offpost.models.types.new_encryption_key`), and the keys
  that ``offpost up`` writes to ``.offpost-key`` files under the run's
  temporary folder;
- whatever a test hands to :func:`register` (API keys, webhook secrets, …).

Besides these exact values, anything shaped like a Facebook token (``EAA…``),
an offpost API key (``opk_…``) or a webhook secret (``whsec_…``) counts as a
leak, so secrets minted by other processes (an ``offpost up`` under test, a
sandbox in a subprocess) are caught too.

The test process scrubs its log records as every offpost process does
(:func:`offpost.redact.install_log_scrubbing`, installed here at start), so the
scan checks what really reaches a handler.

What is scanned:

- every log record of the test process that a logger hands to its handlers,
  whichever the logger: ``logging.Logger.callHandlers`` is wrapped, so records
  of loggers that do not propagate to the root (uvicorn's, once uvicorn has
  configured logging, and any other) are scanned too, and so are records of
  loggers created or reconfigured later. The root logger is set to INFO, so
  that httpx's request lines (URLs with their query strings) are made and
  seen. Not scanned: records that no logger lets through (below its level,
  filtered out, or of a disabled logger), which reach no handler at all. A
  leaking record is masked before its first handler — pytest's capture
  included — gets it;
- a leak fails the test during which it was logged (its setup, call or
  teardown, function-scoped fixtures included); one logged between tests (a
  module- or session-scoped fixture's teardown) fails the next test, and one
  logged after the last test's own checks (the last teardowns, session-scoped
  fixtures included) fails the run at its end;
- at the end of the session, every ``*.log`` file under the run's temporary
  folder: the logs of the ``offpost`` processes the tests started
  (``pipeline_support`` writes one per process). A leak there fails the run.

A report never repeats a secret: it shows a masked form (first characters and
length), so that the report — and pytest's own captured output — is not a
second leak.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from offpost.graph.sandbox import state as sandbox_state
from offpost.models import types
from offpost.redact import install_log_scrubbing

#: A secret shorter than this would match ordinary text by chance; none is this short.
MIN_SECRET_LENGTH = 12
#: Shapes that are secrets whoever made them (the same ones :mod:`offpost.redact` knows).
SECRET_SHAPES = re.compile(r"\bEAA[A-Za-z0-9]{20,}|\b(?:opk|whsec)_[A-Za-z0-9_-]{16,}")
#: A secret lies inside one run of these characters, so only such runs need checking.
_RUN = re.compile(r"[A-Za-z0-9_\-=|.~+/%]{" + str(MIN_SECRET_LENGTH) + ",}")


def mask(secret: str) -> str:
    """A secret as a report may show it: enough to recognise its kind, not to use it."""
    return f"{secret[:4]}…({len(secret)} chars)"


class SecretRegistry:
    """Every secret seen so far, indexed by its first characters for a fast scan."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_prefix: dict[str, set[str]] = {}

    def add(self, *secrets: str | bytes | None) -> None:
        with self._lock:
            for given in secrets:
                secret = given.decode("ascii", "replace") if isinstance(given, bytes) else given
                if secret and len(secret) >= MIN_SECRET_LENGTH:
                    self._by_prefix.setdefault(secret[:MIN_SECRET_LENGTH], set()).add(secret)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(group) for group in self._by_prefix.values())

    def find(self, text: str) -> list[str]:
        """The secrets (known ones, and secret-shaped strings) that occur in ``text``."""
        found = {m.group(0) for m in SECRET_SHAPES.finditer(text)}
        with self._lock:
            index = self._by_prefix
            for run in _RUN.finditer(text):
                value = run.group(0)
                for start in range(len(value) - MIN_SECRET_LENGTH + 1):
                    group = index.get(value[start : start + MIN_SECRET_LENGTH])
                    if group:
                        found.update(s for s in group if value.startswith(s, start))
        return sorted(found)


#: The secrets of this run.
SECRETS = SecretRegistry()


def register(*secrets: str | bytes | None) -> None:
    """Tell the scan about secrets made elsewhere than the sandbox or offpost's key seam."""
    SECRETS.add(*secrets)


@dataclass(frozen=True)
class Leak:
    where: str
    secrets: list[str]
    excerpt: str

    def describe(self) -> str:
        shown = ", ".join(mask(s) for s in self.secrets)
        return f"{self.where}: {shown} in: {self.excerpt}"


def _masked(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, mask(secret))
    return text


def _excerpt(text: str, secrets: Iterable[str]) -> str:
    """The start of ``text``, with the secrets themselves masked."""
    return _masked(text, secrets)[:300].replace("\n", "\\n")


class _RecordScanner:
    """Scans each record before any handler gets it; masks a leaking record.

    Every handler, pytest's own capture (which shows the records of a failing
    test) included, then receives the masked record, not the leak.
    """

    def __init__(self) -> None:
        self._leaks: list[Leak] = []
        self._leaks_lock = threading.Lock()

    def scan(self, record: logging.LogRecord) -> None:
        try:
            parts = [record.getMessage(), record.exc_text or "", record.stack_info or ""]
            if record.exc_info and not record.exc_text:
                parts.append(logging.Formatter().formatException(record.exc_info))
        except Exception:  # noqa: BLE001 - a record we cannot format is still scanned raw
            parts = [repr(record.msg), repr(record.args)]
        text = "\n".join(p for p in parts if p)
        found = SECRETS.find(text)
        if not found:
            return
        with self._leaks_lock:
            self._leaks.append(Leak(f"logger {record.name}", found, _excerpt(text, found)))
        record.msg, record.args = _masked(record.getMessage(), found), None
        record.exc_info, record.exc_text, record.stack_info = None, None, None

    def take(self) -> list[Leak]:
        with self._leaks_lock:
            leaks, self._leaks = self._leaks, []
        return leaks


_scanner = _RecordScanner()
_call_handlers = logging.Logger.callHandlers


def _scanning_call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
    """``Logger.callHandlers``, scanning the record first.

    Every record that any logger passes on goes through here once, whether or not
    it propagates: a handler on the root logger would miss the records of
    loggers with ``propagate = False``, and would be lost to a ``dictConfig``.
    """
    _scanner.scan(record)
    _call_handlers(self, record)


def _install_scanner() -> None:
    logging.Logger.callHandlers = _scanning_call_handlers  # type: ignore[method-assign]


def leaks_in_log_files(root: Path) -> list[Leak]:
    """Leaks in the ``*.log`` files under ``root`` (learning the ``.offpost-key`` keys first)."""
    for key_file in root.rglob(".offpost-key"):
        register(*key_file.read_text(errors="replace").replace(",", "\n").split())
    leaks = []
    for path in sorted(root.rglob("*.log")):
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            found = SECRETS.find(line)
            if found:
                where = f"{path.relative_to(root)}:{number}"
                leaks.append(Leak(where, found, _excerpt(line, found)))
    return leaks


# --- learning the secrets as they are made ---------------------------------------------


def _learn_from(owner: Any, name: str, secrets_of: Callable[..., Iterable[Any]]) -> None:
    """Wrap ``owner.name`` so that what ``secrets_of(result, *args)`` names is registered."""
    original = getattr(owner, name)

    @wraps(original)
    def learning(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        register(*secrets_of(result, *args, **kwargs))
        return result

    setattr(owner, name, learning)


def _learn_the_secrets() -> None:
    world = sandbox_state.World
    _learn_from(world, "_store", lambda token, *_a, **_k: [token.value])
    _learn_from(world, "register_app", lambda app, *_a, **_k: [app.app_secret])
    _learn_from(world, "new_code", lambda code, *_a, **_k: [code.value])
    _learn_from_seam(types, "new_encryption_key", lambda key, *_a, **_k: [key])


def _learn_from_seam(
    module: ModuleType, name: str, secrets_of: Callable[..., Iterable[Any]]
) -> None:
    """Like :func:`_learn_from`, for a function of offpost's that others import by name.

    A module that imported it before the scan started holds the original, so
    every loaded module's reference to it is replaced too.
    """
    original = getattr(module, name)
    _learn_from(module, name, secrets_of)
    learning = getattr(module, name)
    for loaded in list(sys.modules.values()):
        if loaded is not None and getattr(loaded, name, None) is original:
            setattr(loaded, name, learning)


# --- the hooks ---------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    _learn_the_secrets()
    # Every offpost process installs the scrubbing at its start (offpost.redact);
    # the test process, which runs the same code in-process, does the same.
    install_log_scrubbing()
    _install_scanner()
    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


@pytest.fixture(autouse=True)
def _no_secret_in_this_tests_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test when one of its log records held a secret."""
    early = _scanner.take()  # from between tests (a fixture's teardown): this test reports them
    yield
    leaks = early + _scanner.take()
    if leaks:
        pytest.fail(
            f"secrets in log records of {request.node.nodeid}:\n"
            + "\n".join(leak.describe() for leak in leaks[:20]),
            pytrace=False,
        )


_BASETEMP = pytest.StashKey[Path]()


@pytest.fixture(autouse=True, scope="session")
def _remember_basetemp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    request.config.stash[_BASETEMP] = tmp_path_factory.getbasetemp()


@pytest.hookimpl(trylast=True)  # after pytest's own, which may still tear fixtures down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = {"secrets in log records after the last test's checks": _scanner.take()}
    basetemp = session.config.stash.get(_BASETEMP, None)
    if basetemp is not None:
        found["secrets in process logs"] = leaks_in_log_files(basetemp)
    if not any(found.values()):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for title, leaks in found.items():
        if leaks and reporter is not None:
            reporter.section(title, sep="=", red=True, bold=True)
            for leak in leaks[:50]:
                reporter.line(leak.describe())
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
