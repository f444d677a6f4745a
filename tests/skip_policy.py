"""No skips in CI: with EMOLAB_CI=1 (`make test` sets it, and .ci/run runs `make test`), a test run fails when
a test was skipped for any reason but a missing optional input listed in ALLOWED below and in the README's
"Tests" section.

`make test` installs every extra and system package the suite uses, so in CI a skip for a missing
server, database or browser means a test that silently did not run. Outside CI (a plain `pytest`), skips
are only reported, as usual. Loaded by tests/conftest.py; `pytest -p skip_policy` loads it elsewhere.
"""

from __future__ import annotations

import os

import pytest

CI_ENV = "EMOLAB_CI"
#: Skip reasons CI accepts, each with what is missing and why a clean clone may lack it.
ALLOWED = {
    "../shared/reference is not beside this checkout":
        "the authors' released files are read from beside the checkout; they are not part of a clone",
    "this machine cannot mount a tmpfs (needs root with CAP_SYS_ADMIN)":
        "a full disk (and, for root, a read-only dir) is made with a small tmpfs; a container without "
        "CAP_SYS_ADMIN cannot mount one (tests/test_bad_files.py)",
}


class SkipPolicy:
    """Collects every skip of the session, and fails the session in CI when one is not allowed."""

    def __init__(self) -> None:
        self.skips: list[tuple[str, str]] = []

    def _note(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        self.skips.append((report.nodeid, reason.removeprefix("Skipped: ")))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(report)  # a module-level importorskip skips the whole file at collection

    def not_allowed(self) -> list[tuple[str, str]]:
        if os.environ.get(CI_ENV) != "1":
            return []
        return [(node, reason) for node, reason in self.skips if reason not in ALLOWED]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.not_allowed():
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        refused = self.not_allowed()
        if not refused:
            return
        terminalreporter.section(f"skipped in CI ({CI_ENV}=1)", red=True, bold=True)
        terminalreporter.write_line(f"{len(refused)} test(s) skipped for a reason that is not a documented missing "
                                    "optional input (tests/skip_policy.py ALLOWED); CI must run them:")
        for node, reason in refused:
            terminalreporter.write_line(f"  {node}: {reason}")


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("emolab-skip-policy"):
        config.pluginmanager.register(SkipPolicy(), "emolab-skip-policy")
