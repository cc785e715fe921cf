import functools
import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlp import data as data_lib
from tests.conftest import REAL_DATA, write_dataset

idx_arrays = st.one_of(
    hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=1, min_side=0, max_side=50)),
    hnp.arrays(np.uint8, st.tuples(st.integers(0, 5), st.integers(1, 6), st.integers(1, 6))),
)


@given(idx_arrays)
def test_idx_round_trip_preserves_any_array(array):
    parsed = data_lib.parse_idx(data_lib.encode_idx(array))
    assert parsed.shape == array.shape
    np.testing.assert_array_equal(parsed, array)


@given(idx_arrays.filter(lambda a: a.size > 0), st.data())
def test_idx_truncated_anywhere_is_rejected(array, draw):
    content = data_lib.encode_idx(array)
    cut = draw.draw(st.integers(0, len(content) - 1))
    with pytest.raises(data_lib.DataError, match="truncated|header"):
        data_lib.parse_idx(content[:cut])


@given(idx_arrays, st.binary(min_size=1, max_size=8))
def test_idx_trailing_bytes_are_rejected(array, extra):
    with pytest.raises(data_lib.DataError, match="trailing"):
        data_lib.parse_idx(data_lib.encode_idx(array) + extra)


@given(st.binary(min_size=4, max_size=4).filter(
    lambda m: not (m[:2] == b"\0\0" and m[2] == 8 and m[3] in (1, 3))))
def test_idx_bad_magic_is_rejected(magic):
    content = magic + b"\0\0\0\1" * 3 + b"\0"
    with pytest.raises(data_lib.DataError, match="magic"):
        data_lib.parse_idx(content)


def test_reads_gzipped_and_plain_files_alike(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    data_lib.write_idx(tmp_path / "a.gz", labels, compress=True)
    data_lib.write_idx(tmp_path / "b", labels, compress=False)
    assert gzip.open(tmp_path / "a.gz").read(4) == b"\0\0\x08\x01"
    for name in ("a.gz", "b"):
        np.testing.assert_array_equal(
            data_lib.read_file(tmp_path / name, "train_labels", verify_checksum=False), labels)


def test_checksum_mismatch_names_the_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    data_lib.write_idx(path, np.zeros(60_000, np.uint8))
    with pytest.raises(data_lib.DataError, match=r"train-labels-idx1-ubyte.gz: checksum mismatch"):
        data_lib.read_file(path, "train_labels", verify_checksum=True)


def test_label_out_of_range_and_wrong_image_size_are_rejected(tmp_path):
    data_lib.write_idx(tmp_path / "labels", np.array([1, 10], np.uint8))
    with pytest.raises(data_lib.DataError, match="label 10"):
        data_lib.read_file(tmp_path / "labels", "train_labels", verify_checksum=False)
    data_lib.write_idx(tmp_path / "images", np.zeros((2, 27, 28), np.uint8))
    with pytest.raises(data_lib.DataError, match="27x28, expected 28x28"):
        data_lib.read_file(tmp_path / "images", "train_images", verify_checksum=False)
    with pytest.raises(data_lib.DataError, match="1-dimensional data, expected 3"):
        data_lib.read_file(tmp_path / "labels", "train_images", verify_checksum=False)


def test_corrupt_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "x.gz"
    data_lib.write_idx(path, np.zeros((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-6])  # cut the gzip trailer
    with pytest.raises(data_lib.DataError, match="cannot read"):
        data_lib.read_file(path, "train_images", verify_checksum=False)


def test_load_splits_scales_and_slices(small_data):
    splits = data_lib.load(small_data, verify_checksums=False, validation_size=100)
    raw_images = data_lib.parse_idx(gzip.open(small_data / "train-images-idx3-ubyte.gz").read())
    raw_labels = data_lib.parse_idx(gzip.open(small_data / "train-labels-idx1-ubyte.gz").read())
    assert splits.train_images.shape == (500, 784) and splits.validation_images.shape == (100, 784)
    assert splits.test_images.shape == (200, 784)
    assert splits.train_images.dtype == np.float32 and splits.train_labels.dtype == np.int32
    assert 0.0 <= splits.train_images.min() and splits.train_images.max() <= 1.0
    np.testing.assert_allclose(splits.validation_images[0] * 255, raw_images[500].reshape(-1),
                               atol=1e-3)
    np.testing.assert_array_equal(splits.validation_labels, raw_labels[500:])


def test_load_rejects_images_and_labels_that_disagree(tmp_path):
    write_dataset(tmp_path)
    data_lib.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(199, np.uint8))
    with pytest.raises(data_lib.DataError, match="200 images but 199 labels"):
        data_lib.load(tmp_path, verify_checksums=False, validation_size=100)


def test_strict_load_of_small_files_is_rejected(small_data):
    with pytest.raises(data_lib.DataError, match="checksum mismatch"):
        data_lib.load(small_data, verify_checksums=True)


def test_locate_prefers_explicit_dir_then_env_then_cache(tmp_path, isolated_cache, monkeypatch):
    explicit = write_dataset(tmp_path / "explicit", 20, 10)
    from_env = write_dataset(tmp_path / "env", 20, 10)
    write_dataset(isolated_cache, 20, 10)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(from_env))
    assert data_lib.locate(explicit) == explicit
    assert data_lib.locate() == from_env
    monkeypatch.delenv("FASHION_MNIST_DIR")
    assert data_lib.locate(allow_download=False) == isolated_cache


def test_locate_reports_missing_files_of_explicit_dir(tmp_path):
    write_dataset(tmp_path, 20, 10)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data_lib.DataError,
                       match="missing t10k-labels-idx1-ubyte.*dataset-fashion-mnist"):
        data_lib.locate(tmp_path)


def test_nothing_found_says_what_was_tried(isolated_cache, monkeypatch):
    monkeypatch.setattr(data_lib, "DEBIAN_DIR", isolated_cache.parent / "no-debian")
    with pytest.raises(data_lib.DataError) as error:
        data_lib.locate(mirrors=("http://127.0.0.1:9/",))
    message = str(error.value)
    assert str(isolated_cache) in message and "no-debian" in message
    assert "download" in message and "apt-get install dataset-fashion-mnist" in message


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server on 127.0.0.1 serving a directory: a stand-in for a public mirror."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _publish_small_files_as_real(served, monkeypatch):
    """Serve small files and make FILES expect their checksums, as it does the real ones'."""
    write_dataset(served, 30, 10)
    files = {}
    for key, (stem, _, _) in data_lib.FILES.items():
        content = gzip.open(served / f"{stem}.gz").read()
        files[key] = (stem, hashlib.sha256(content).hexdigest(), len(content))
    monkeypatch.setattr(data_lib, "FILES", files)


def test_download_from_a_mirror_verifies_and_fills_the_cache(mirror, isolated_cache, monkeypatch):
    served, url = mirror
    _publish_small_files_as_real(served, monkeypatch)
    monkeypatch.setattr(data_lib, "DEBIAN_DIR", isolated_cache.parent / "no-debian")
    found = data_lib.locate(mirrors=("http://127.0.0.1:9/", url))  # the first mirror is down
    assert found == isolated_cache
    for stem, _, _ in data_lib.FILES.values():
        assert (found / f"{stem}.gz").read_bytes() == (served / f"{stem}.gz").read_bytes()
    # no staging left behind (the lock file stays: it is how downloads take turns)
    assert [p.name for p in found.iterdir() if p.name.startswith(".")] == [".lock"]


def test_corrupted_download_never_lands_in_the_cache(mirror, isolated_cache, monkeypatch):
    served, url = mirror
    _publish_small_files_as_real(served, monkeypatch)
    monkeypatch.setattr(data_lib, "DEBIAN_DIR", isolated_cache.parent / "no-debian")
    bad = served / "t10k-images-idx3-ubyte.gz"
    data_lib.write_idx(bad, np.ones((10, 28, 28), np.uint8))  # right shape, wrong content
    with pytest.raises(data_lib.DataError, match="t10k-images-idx3-ubyte.*checksum mismatch"):
        data_lib.locate(mirrors=(url,))
    assert not (isolated_cache / "t10k-images-idx3-ubyte.gz").exists()
    assert [p.name for p in isolated_cache.iterdir() if p.name.startswith(".")] == [".lock"]


def _batches(dataset, count):
    return [(images.numpy(), labels.numpy()) for images, labels in dataset.take(count)]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 16), seed=st.integers(0, 2**31 - 1))
def test_every_epoch_visits_each_example_once(n, batch_size, seed):
    images = np.arange(n, dtype=np.float32)[:, None].repeat(3, 1)
    labels = np.arange(n, dtype=np.int32)
    steps = -(-n // batch_size)
    batches = _batches(data_lib.training_batches(images, labels, batch_size, seed), 2 * steps)
    for epoch in range(2):
        seen = np.concatenate([labels for _, labels in batches[epoch * steps:(epoch + 1) * steps]])
        assert sorted(seen) == list(range(n))
    for batch_images, batch_labels in batches:
        np.testing.assert_array_equal(batch_images[:, 0], batch_labels)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 40), batch_size=st.integers(1, 16), start=st.integers(0, 20))
def test_the_stream_can_start_at_any_step(n, batch_size, start):
    images = np.arange(n, dtype=np.float32)[:, None]
    labels = np.arange(n, dtype=np.int32)
    full = _batches(data_lib.training_batches(images, labels, batch_size, 7), start + 3)
    resumed = _batches(
        data_lib.training_batches(images, labels, batch_size, 7, start_step=start), 3)
    for (_, a), (_, b) in zip(full[start:], resumed):
        np.testing.assert_array_equal(a, b)


def test_epochs_are_shuffled_differently_and_by_seed():
    labels = np.arange(200, dtype=np.int32)
    images = labels[:, None].astype(np.float32)
    first = np.concatenate(
        [b for _, b in _batches(data_lib.training_batches(images, labels, 200, 1), 2)])
    other_seed = _batches(data_lib.training_batches(images, labels, 200, 2), 1)[0][1]
    assert not np.array_equal(first[:200], first[200:])
    assert not np.array_equal(first[:200], other_seed)
    assert not np.array_equal(first[:200], labels)


def test_evaluation_batches_keep_order():
    labels = np.arange(25, dtype=np.int32)
    images = labels[:, None].astype(np.float32)
    seen = np.concatenate([b.numpy() for _, b in data_lib.evaluation_batches(images, labels, 10)])
    np.testing.assert_array_equal(seen, labels)


def test_evaluation_batches_of_8_bit_pixels_are_the_images_load_makes(tmp_path):
    directory = write_dataset(tmp_path / "data", n_train=120, n_test=30)
    splits = data_lib.load(directory, verify_checksums=False, validation_size=20)
    pixels = data_lib.read_file(directory / "t10k-images-idx3-ubyte.gz", "test_images", False)
    batches = data_lib.evaluation_batches(pixels.reshape(30, -1), splits.test_labels, 8)
    seen = np.concatenate([images.numpy() for images, _ in batches])
    assert seen.dtype == np.float32
    np.testing.assert_array_equal(seen, splits.test_images)  # bit for bit


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="the real Fashion-MNIST is not installed "
                    "(apt-get install dataset-fashion-mnist)")
def test_real_data_passes_every_check():
    splits = data_lib.load(REAL_DATA, verify_checksums=True)
    assert len(splits.train_labels) == 55_000 and len(splits.validation_labels) == 5_000
    assert len(splits.test_labels) == 10_000
    assert np.bincount(splits.test_labels).tolist() == [1000] * 10


def test_a_decompression_bomb_is_stopped_at_the_files_known_size(tmp_path, monkeypatch):
    # A label file whose header is right but which inflates to 200 MB: reading stops at the
    # published file's size (60,008 bytes) instead of filling memory.
    bomb = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(data_lib.encode_idx(np.zeros(60_000, np.uint8))[:8])
        for _ in range(200):
            f.write(bytes(2**20))
    decompressed = []
    real_open = gzip.open

    class Counting:
        def __init__(self, *args, **kwargs):
            self.stream = real_open(*args, **kwargs)

        def read(self, size=-1):
            content = self.stream.read(size)
            decompressed.append(len(content))
            return content

    monkeypatch.setattr(data_lib.gzip, "open", Counting)
    with pytest.raises(data_lib.DataError, match="decompresses to more than 60008 bytes"):
        data_lib.read_file(bomb, "train_labels")
    assert sum(decompressed) <= 60_009  # it stopped there, not at 200 MB
    monkeypatch.setattr(data_lib.gzip, "open", real_open)
    # Without the published checksum the bound is UNVERIFIED_LIMIT (256 MiB; 1 MiB here).
    monkeypatch.setattr(data_lib, "UNVERIFIED_LIMIT", 2**20)
    with pytest.raises(data_lib.DataError, match=f"more than {2**20} bytes"):
        data_lib.read_file(bomb, "train_labels", verify_checksum=False)


def test_https_mirrors_come_first():
    schemes = [url.split(":")[0] for url in data_lib.MIRRORS]
    assert schemes == sorted(schemes, key=lambda s: s != "https") and schemes[0] == "https"


def test_a_killed_downloads_staging_is_removed_by_the_next(mirror, isolated_cache, monkeypatch):
    served, url = mirror
    _publish_small_files_as_real(served, monkeypatch)
    monkeypatch.setattr(data_lib, "DEBIAN_DIR", isolated_cache.parent / "no-debian")
    stale = isolated_cache / ".download-killed"
    stale.mkdir(parents=True)
    (stale / "train-images-idx3-ubyte.gz").write_bytes(b"half a file")
    data_lib.locate(mirrors=(url,))
    assert not stale.exists()


def test_two_downloads_into_one_cache_take_turns(mirror, isolated_cache, monkeypatch):
    import threading
    import time

    from mlp.lock import DirectoryLock

    served, url = mirror
    _publish_small_files_as_real(served, monkeypatch)
    isolated_cache.mkdir(parents=True)
    outcome = {}

    def second_download():
        started = time.monotonic()
        outcome["target"] = data_lib.download(isolated_cache, (url,))
        outcome["waited"] = time.monotonic() - started

    with DirectoryLock(isolated_cache):  # the first download, still running
        second = threading.Thread(target=second_download)
        second.start()
        time.sleep(1.0)
        assert second.is_alive() and "target" not in outcome  # it waits its turn
    second.join(timeout=60)
    assert outcome["target"] == isolated_cache and outcome["waited"] >= 1.0
    assert all((isolated_cache / f"{stem}.gz").is_file() for stem, _, _ in data_lib.FILES.values())
    # One that waits longer than it may gives up in one line.
    monkeypatch.setattr(data_lib, "DOWNLOAD_WAIT", 0.3)
    with DirectoryLock(isolated_cache):
        with pytest.raises(data_lib.DataError, match="has been downloading .* for over 0.3 s"):
            data_lib.download(isolated_cache, (url,))
