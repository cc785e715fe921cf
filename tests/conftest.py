import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mlp.machine import DEBIAN_DIR as REAL_DATA  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def make_images(labels, rng):
    """Learnable 28x28 images: each class lights its own band of rows, plus noise."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 * label + 4: 2 * label + 7, 4:24] = 200 + rng.integers(0, 55)
    return images


def write_dataset(directory, n_train=600, n_test=200, seed=0, compress=True):
    """Four small, consistent IDX files in `directory`, in the published file names."""
    from mlp import data as data_lib  # here, not above: xdist's controller need not load TensorFlow

    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        data_lib.write_idx(directory / f"{part}-images-idx3-ubyte{suffix}",
                           make_images(labels, rng), compress)
        data_lib.write_idx(directory / f"{part}-labels-idx1-ubyte{suffix}", labels, compress)
    return directory


# Module fixtures that train a run or start processes for several tests. Under xdist each worker
# would build its own copy; the tests sharing one go to one worker (--dist loadgroup), so it is
# built once.
SHARED_RUNS = {"uninterrupted_multi_worker", "exported_model", "finished_run", "uninterrupted_run",
               "board", "benchmark_run", "mirrored"}


def pytest_itemcollected(item):  # as each test is collected, before xdist reads the groups
    for name in sorted(SHARED_RUNS.intersection(item.fixturenames)):
        item.add_marker(pytest.mark.xdist_group(name))


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("small-data"))


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty download cache and no FASHION_MNIST_DIR, so locate() cannot see the real data
    through them."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    return tmp_path / "cache" / "mlp-fashion-mnist"


# Small runs; they leave out the weight histograms, the report's pictures and the corrupted
# test sets except where a test checks them (--histograms, --figures or --corruptions after these
# flags turns them back on).
SMALL_RUN_FLAGS = ["--no-verify-checksums", "--no-corruptions", "--validation-size", "100",
                   "--batch-size", "50", "--no-histograms", "--no-figures"]


def run_module(module, *args, timeout=300, env=None, **kwargs):
    """`python -m experiments.<module> args` in the repo: the CompletedProcess of its exit code,
    stdout and stderr. Runs in this process (the same `main` the module runs, without a
    process's start-up) unless a separate process shows something more: another environment
    (`env`), or a strategy or device split, which TensorFlow can only set up once per process.
    In this process an exception that would end the program is caught and its traceback put on
    stderr with exit code 1, as the process would show it."""
    args = [str(arg) for arg in args]
    if env is None and not kwargs and not _needs_its_own_process(args):
        return run_in_process(module, args)
    return run_process(module, *args, timeout=timeout, env=env, **kwargs)


def run_process(module, *args, timeout=300, env=None, **kwargs):
    """Run `python -m experiments.<module> args` in a new process (with `env`, default this
    process's environment); returns the CompletedProcess."""
    env = {**(os.environ if env is None else env), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", f"experiments.{module}", *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          **kwargs)


def _needs_its_own_process(args):
    strategy = args[args.index("--strategy") + 1] if "--strategy" in args[:-1] else "one_device"
    return strategy != "one_device" or "--cpu-devices" in args


def _entry(module):
    """The function `python -m experiments.<module>` runs, taking argv and returning the code."""
    import importlib

    from experiments.recipes import RECIPES
    from mlp import cli

    program = importlib.import_module(f"experiments.{module}")
    if not hasattr(program, "main"):  # a recipe's module: the shared command line
        return lambda argv: cli.main(f"python -m experiments.{module}", module, RECIPES[module],
                                     program.__doc__, argv)
    return program.main


def run_in_process(module, args):
    import contextlib
    import io
    import traceback

    from tensorflow.python.framework import config as tf_config

    deterministic = tf_config.is_op_determinism_enabled()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = _entry(module)(args)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    if not deterministic and tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()  # --deterministic is for that run only
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())
