"""The suite's own arrangement: the tests that share a module's trained run (conftest.SHARED_RUNS)
are scheduled on one xdist worker, so each such run is built once, not once per worker; and
xdist's controller, which loads conftest.py but runs no test, does not load TensorFlow; and a
stuck test ends the run with its stack printed instead of hanging it."""

import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_RUNS


def test_tests_sharing_a_trained_run_carry_its_group(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("runs under pytest-xdist's --dist loadgroup only (pyproject.toml's default)")
    sharing = [item for item in request.session.items
               if SHARED_RUNS.intersection(item.fixturenames)]
    if not sharing:
        pytest.skip("no test sharing a trained run was collected")
    # xdist schedules by the "@group" its collection hook appends to the test id; a pytest that
    # drops it (9.2) spreads each group over the workers again, with no other sign.
    for item in sharing:
        group = "_".join(sorted(SHARED_RUNS.intersection(item.fixturenames)))
        assert item.nodeid.endswith(f"@{group}"), item.nodeid


def test_the_suites_conftest_loads_no_tensorflow():
    # Loading it in xdist's controller delays every worker's start by TensorFlow's import.
    program = "import sys, tests.conftest; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_stuck_test_fails_the_suite_instead_of_hanging_it(tmp_path):
    # The suite's own settings (pyproject.toml) with the time limits cut to seconds: the stuck
    # test's stack is printed, the run ends and fails, and the test beside it still passes.
    (tmp_path / "test_stuck.py").write_text(
        "import threading\n"
        "def test_stuck():\n"
        "    threading.Event().wait()\n"
        "def test_fine():\n"
        "    pass\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"),
                           "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-o", "timeout=3",
                           "-o", "faulthandler_timeout=1", str(tmp_path / "test_stuck.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stdout
    assert "crashed while running 'test_stuck.py::test_stuck'" in done.stdout, done.stdout
    assert "1 failed, 1 passed" in done.stdout, done.stdout
    assert 'test_stuck.py", line 3 in test_stuck' in done.stderr, done.stderr
