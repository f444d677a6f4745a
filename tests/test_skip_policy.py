"""`make test` fails when a test is skipped in CI for a reason that is not a documented missing optional input
(tests/skip_policy.py), so no test can stop running without anyone noticing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from skip_policy import ALLOWED

TESTS = Path(__file__).resolve().parent
ALLOWED_REASON = next(iter(ALLOWED))

SUITE = f'''
import pytest

def test_runs():
    pass

def test_without_the_authors_files():
    pytest.skip({ALLOWED_REASON!r})

def test_without_a_server():
    pytest.skip("needs the server extra: make setup-server")

@pytest.fixture()
def database():
    pytest.skip("PostgreSQL is not installed")

def test_with_a_database(database):
    pass
'''
MODULE_SKIP = 'import pytest\npytest.importorskip("no_such_module_emolab", reason="needs the nothing extra")\n'


def _pytest(folder: Path, ci: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("EMOLAB_CI", None)
    if ci:
        env["EMOLAB_CI"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "skip_policy", "-p", "no:cacheprovider", "-q",
                           str(folder)], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_for_another_reason_fails_the_run_in_ci_only(tmp_path):
    (tmp_path / "test_suite.py").write_text(SUITE, encoding="utf-8")
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP, encoding="utf-8")
    ci = _pytest(tmp_path, ci=True)
    assert ci.returncode == 1, ci.stdout[-3000:]
    assert "3 test(s) skipped for a reason that is not a documented missing optional input" in ci.stdout
    assert "test_suite.py::test_without_a_server: needs the server extra: make setup-server" in ci.stdout
    assert "test_suite.py::test_with_a_database: PostgreSQL is not installed" in ci.stdout
    assert "test_module_skip.py: needs the nothing extra" in ci.stdout
    assert "test_without_the_authors_files" not in ci.stdout.split("skipped in CI")[-1]
    local = _pytest(tmp_path, ci=False)  # outside CI a skip is only reported
    assert local.returncode == 0, local.stdout[-3000:]
    assert "skipped in CI" not in local.stdout


def test_the_documented_skip_passes_in_ci(tmp_path):
    (tmp_path / "test_suite.py").write_text(f"import pytest\n\ndef test_a():\n    pytest.skip({ALLOWED_REASON!r})\n",
                                            encoding="utf-8")
    result = _pytest(tmp_path, ci=True)
    assert result.returncode == 0, result.stdout[-3000:]
