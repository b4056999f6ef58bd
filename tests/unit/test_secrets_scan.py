"""The secrets scan of the test run (``tests/secrets_scan.py``) does catch leaks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.secrets_scan import SecretRegistry, leaks_in_log_files, mask, register

SECRET = "k9Qe2LmZx7Rt4VbN1pWc"


def test_a_registered_secret_is_found_inside_longer_text() -> None:
    registry = SecretRegistry()
    registry.add(SECRET, b"another-secret-0123456789", "short")
    text = f"GET /v26.0/me?access_token={SECRET}&x=1 and another-secret-0123456789."
    assert registry.find(text) == sorted([SECRET, "another-secret-0123456789"])
    assert registry.find("nothing to see: k9Qe2LmZx7Rt4Vb and short") == []


def test_secret_shapes_are_found_even_unregistered() -> None:
    registry = SecretRegistry()
    token = "EAA" + "x" * 40
    key = "opk_" + "y" * 43
    assert registry.find(f"token {token} key {key}") == sorted([token, key])
    assert registry.find("opk_not-a-key EAAshort") == []


def test_leaks_in_log_files_learn_the_keys_of_offpost_up() -> None:
    # Not under the run's temporary folder, whose logs the run itself scans at its end.
    with tempfile.TemporaryDirectory() as folder:
        check_log_files(Path(folder))


def check_log_files(tmp_path: Path) -> None:
    fernet_key = "q" * 43 + "="
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / ".offpost-key").write_text(fernet_key + "\n")
    (tmp_path / "up" / "worker.log").write_text(f"fine\nkeys are {fernet_key}\n")
    leaks = leaks_in_log_files(tmp_path)
    assert [leak.where for leak in leaks] == ["up/worker.log:2"]
    assert fernet_key not in leaks[0].describe()
    assert mask(fernet_key) in leaks[0].describe()


def test_a_test_that_logs_a_secret_fails_and_the_report_does_not_repeat_it(
    pytester: pytest.Pytester,
) -> None:
    secret = "leaky-" + SECRET
    pytester.makepyfile(
        f"""
        import logging
        from tests.secrets_scan import register

        def test_leaks():
            register({secret!r})
            logging.getLogger("somewhere").warning("connecting with %s", {secret!r})

        def test_clean():
            logging.getLogger("somewhere").warning("nothing secret here")
        """
    )
    result = pytester.runpytest_inprocess("-p", "tests.secrets_scan", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    output = result.stdout.str()
    assert "secrets in log records" in output
    assert mask(secret) in output
    assert f"connecting with {secret}" not in output


def test_a_secret_in_a_process_log_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from offpost.models.types import new_encryption_key

        def test_writes_a_log(tmp_path):
            key = new_encryption_key()
            (tmp_path / "worker.log").write_text("starting with key " + key + "\\n")
        """
    )
    basetemp = pytester.path / "basetemp"
    result = pytester.runpytest_inprocess(
        "-p", "tests.secrets_scan", "-p", "no:cacheprovider", f"--basetemp={basetemp}"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "secrets in process logs" in result.stdout.str()
    assert "worker.log:1" in result.stdout.str()
    for log in basetemp.rglob("*.log"):  # this run's own scan must not find it again
        log.unlink()


def test_register_ignores_empty_and_short_values() -> None:
    register(None, "", "abc")  # must not raise, and must not make "abc" a secret
    assert SecretRegistry().find("abc") == []


def test_a_leak_on_a_logger_that_does_not_propagate_is_caught_and_masked(
    pytester: pytest.Pytester,
) -> None:
    # As uvicorn's loggers after uvicorn configured logging: own handler, no root.
    secret = "quiet-" + SECRET
    pytester.makepyfile(
        f"""
        import logging
        from tests.secrets_scan import register

        class Keep(logging.Handler):
            def __init__(self):
                super().__init__()
                self.seen = []

            def emit(self, record):
                self.seen.append(record.getMessage())

        def test_leaks():
            register({secret!r})
            quiet = logging.getLogger("selftest.quiet")
            quiet.propagate = False
            quiet.setLevel(logging.INFO)
            keep = Keep()
            quiet.addHandler(keep)
            try:
                quiet.info("serving with %s", {secret!r})
            finally:
                quiet.removeHandler(keep)
            assert len(keep.seen) == 1
            assert {secret!r} not in keep.seen[0]  # masked before its own handler saw it
        """
    )
    result = pytester.runpytest_inprocess("-p", "tests.secrets_scan", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    output = result.stdout.str()
    assert "secrets in log records of" in output
    assert "logger selftest.quiet" in output
    assert mask(secret) in output
    assert secret not in output


def test_a_leak_in_a_session_fixtures_teardown_fails_the_run(pytester: pytest.Pytester) -> None:
    secret = "teardown-" + SECRET
    pytester.makepyfile(
        f"""
        import logging
        import pytest
        from tests.secrets_scan import register

        @pytest.fixture(scope="session")
        def server():
            yield
            register({secret!r})
            logging.getLogger("somewhere").warning("stopping with %s", {secret!r})

        def test_uses_the_server(server):
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "tests.secrets_scan", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)
    output = result.stdout.str()
    assert "secrets in log records after the last test's checks" in output
    assert mask(secret) in output
    assert secret not in output
