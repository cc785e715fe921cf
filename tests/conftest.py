import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mlp import data as data_lib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = data_lib.DEBIAN_DIR


def make_images(labels, rng):
    """Learnable 28x28 images: each class lights its own band of rows, plus noise."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 * label + 4: 2 * label + 7, 4:24] = 200 + rng.integers(0, 55)
    return images


def write_dataset(directory, n_train=600, n_test=200, seed=0, compress=True):
    """Four small, consistent IDX files in `directory`, in the published file names."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        data_lib.write_idx(directory / f"{part}-images-idx3-ubyte{suffix}", make_images(labels, rng),
                           compress)
        data_lib.write_idx(directory / f"{part}-labels-idx1-ubyte{suffix}", labels, compress)
    return directory


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


SMALL_RUN_FLAGS = ["--no-verify-checksums", "--validation-size", "100", "--batch-size", "50",
                   "--no-histograms"]


def run_experiment(module, *args, timeout=300, env=None, **kwargs):
    """Run `python -m experiments.<module> args` in the repo (with `env`, default this process's
    environment); returns the CompletedProcess."""
    env = {**(os.environ if env is None else env), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", f"experiments.{module}", *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          **kwargs)
