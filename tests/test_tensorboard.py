"""A real `tensorboard` process over a small run's logs: what a researcher would see."""

import json
import re
import struct
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import SMALL_RUN_FLAGS, run_module

pytestmark = pytest.mark.slow  # a real tensorboard process


@pytest.fixture(scope="module")
def board(small_data, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("board")
    done = run_module("improved", "--data-dir", small_data, "--logdir", logdir,
                          "--run-name", "shown", "--epochs", "2", *SMALL_RUN_FLAGS, "--histograms",
                          "--figures", "--corruptions")
    assert done.returncode == 0, done.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", "0", "--reload_interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = None
    deadline = time.time() + 90
    while time.time() < deadline and url is None:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        url = found.group(1) if found else None
    assert url, "tensorboard did not start"
    yield url
    process.terminate()
    process.wait(timeout=30)


def _get(url, path, body=None, until=lambda data: True, timeout=60):
    """GET (or POST `body`) until `until(data)` holds, as TensorBoard loads logs in the
    background."""
    deadline = time.time() + timeout
    while True:
        request = urllib.request.Request(url + path,
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            data = json.loads(response.read())
        if until(data) or time.time() > deadline:
            return data
        time.sleep(1)


def test_runs_and_scalar_tags_are_shown(board):
    runs = _get(board, "/data/runs", until=lambda r: "shown/validation" in r)
    assert {"shown/train", "shown/validation", "shown/test"} <= set(runs)
    tags = _get(board, "/data/plugin/scalars/tags", until=lambda t: "shown/train" in t)
    assert ({"loss", "data_loss", "l2_penalty", "accuracy", "learning_rate"}
            <= set(tags["shown/train"]))
    assert {"loss", "accuracy"} <= set(tags["shown/validation"])
    assert {"accuracy", "corruption/mean", "corruption/rotate"} <= set(tags["shown/test"])
    points = _get(board, "/data/plugin/scalars/scalars?run=shown/validation&tag=accuracy")
    assert [step for _, step, _ in points] == [1, 2]


def test_confusion_matrix_and_mistakes_are_images(board):
    tags = _get(board, "/data/plugin/images/tags", until=lambda t: "shown/test" in t)
    assert {"confusion_matrix", "most_confident_mistakes",
            "reliability_diagram", "corruption_accuracy"} <= set(tags["shown/test"])
    images = _get(board, "/data/plugin/images/images?run=shown/test&tag=confusion_matrix")
    assert len(images) == 1 and images[0]["step"] == 2
    with urllib.request.urlopen(f"{board}/data/plugin/images/individualImage?"
                                f"{images[0]['query']}", timeout=30) as response:
        png = response.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (800, 700)  # the matplotlib figure: 8 x 7 inches at 100 dpi


def test_hparams_dashboard_lists_config_and_metrics(board):
    experiment = _get(board, "/data/plugin/hparams/experiment", body={"experimentName": ""},
                      until=lambda e: e.get("hparamInfos"))
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    assert {"learning_rate", "batch_norm", "dropout", "l2", "hidden_sizes", "seed"} <= hparams
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"hparams/test_accuracy", "hparams/validation_accuracy"} <= metrics
