"""The fused batch-norm and dropout kernels (mlp/fused.py): the same numbers as TensorFlow's ops,
masks of the right distribution, and the choice between them (--kernels)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp import MLP, BatchNorm, fused
from mlp.config import Config, ConfigError
from mlp.run import assemble
from tests.conftest import SMALL_RUN_FLAGS, run_module


@pytest.fixture(scope="module")
def ops():
    return fused.load()


def _seed(a, b):
    return tf.constant([a, b], tf.int64)


def _mask(ops, shape, rate, seed):
    return ops.mlp_dropout(tf.ones(shape), seed, rate=rate).numpy()


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 40), features=st.integers(1, 70), rate=st.sampled_from([0.0, 0.2, 0.5]),
       seed=st.integers(0, 2**31 - 1))
def test_fused_batch_norm_dropout_matches_tensorflow_ops_with_the_same_mask(ops, rows, features,
                                                                            rate, seed):
    rng = np.random.default_rng(seed)
    x = tf.constant((rng.normal(size=(rows, features)) * 3 + 1).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(rows, features)).astype(np.float32))
    gamma = rng.uniform(0.5, 2, features).astype(np.float32)
    beta = rng.normal(size=features).astype(np.float32)
    step_seed = _seed(seed, 7)
    mask = _mask(ops, (rows, features), rate, step_seed)
    norms = []
    for _ in range(2):
        norm = BatchNorm(features)
        norm.gamma.assign(gamma)
        norm.beta.assign(beta)
        norms.append(norm)

    def outputs_and_gradients(forward, norm):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(norm)
            loss = tf.reduce_sum(y * upstream)
        return [y, *tape.gradient(loss, [x, norm.gamma, norm.beta]), norm.moving_mean,
                norm.moving_variance]

    ours = outputs_and_gradients(
        lambda norm: fused.batch_norm_dropout(ops, x, norm, rate, step_seed), norms[0])
    reference = outputs_and_gradients(lambda norm: norm(x, training=True) * mask, norms[1])
    for name, a, b in zip(["y", "dx", "dgamma", "dbeta", "moving mean", "moving variance"],
                          ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * (1 + np.abs(b).max()),
                                   err_msg=name)


@settings(max_examples=10, deadline=None)
@given(rate=st.floats(0.05, 0.8), seed=st.integers(0, 2**31 - 1), step=st.integers(0, 10**6))
def test_fused_dropout_masks_keep_the_expected_value_and_change_with_the_step(ops, rate, seed,
                                                                               step):
    shape = (300, 700)
    mask = _mask(ops, shape, rate, _seed(seed, step))
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1.0 / (1.0 - rate), rtol=1e-6)
    n = kept.size
    sigma = np.sqrt(rate * (1 - rate) / n)
    assert abs((1 - kept.mean()) - rate) < 5 * sigma
    np.testing.assert_array_equal(mask, _mask(ops, shape, rate, _seed(seed, step)))
    # Another step, and the next row: as independent as two fresh draws.
    agree = rate**2 + (1 - rate) ** 2
    sigma_agree = np.sqrt(agree * (1 - agree) / n)
    other = _mask(ops, shape, rate, _seed(seed, step + 1)) != 0
    assert abs((other == kept).mean() - agree) < 5 * sigma_agree
    rows_agree = (kept[1:] == kept[:-1]).mean()
    assert abs(rows_agree - agree) < 5 * np.sqrt(agree * (1 - agree) / kept[1:].size)


def test_fused_dropout_gradient_is_the_same_dropout_of_the_upstream_gradient(ops):
    x = tf.random.normal([64, 33])
    upstream = tf.random.normal([64, 33])
    seed = _seed(5, 9)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fused.dropout(ops, x, 0.3, seed)
    gradient = tape.gradient(y, x, output_gradients=upstream)
    mask = _mask(ops, (64, 33), 0.3, seed)
    np.testing.assert_array_equal(y, x.numpy() * mask)
    np.testing.assert_array_equal(gradient, upstream.numpy() * mask)


@pytest.mark.parametrize("call,words", [
    (lambda ops: ops.mlp_dropout(tf.ones([2, 3, 4]), _seed(0, 0), rate=0.1), "rows, features"),
    (lambda ops: ops.mlp_batch_norm_dropout(tf.ones([4, 3]), tf.ones([2]), tf.ones([3]),
                                            _seed(0, 0), epsilon=1e-3, rate=0.1),
     "must be \\[features\\]"),
    (lambda ops: ops.mlp_dropout(tf.ones([2, 3]), _seed(0, 0), rate=1.0), "dropout rate"),
    (lambda ops: ops.mlp_dropout(tf.ones([2, 3]), _seed(0, 0), rate=-0.1), "dropout rate"),
    (lambda ops: ops.mlp_dropout(tf.ones([2, 3]), _seed(0, 0), rate=float("nan")),
     "dropout rate"),
    (lambda ops: ops.mlp_dropout(tf.ones([2, 3]), tf.constant([1, 2, 3], tf.int64), rate=0.1),
     "seed must be a pair"),
    (lambda ops: ops.mlp_dropout(tf.ones([2, 3]), tf.constant([[1, 2]], tf.int64), rate=0.1),
     "seed must be a pair"),
    (lambda ops: ops.mlp_batch_norm_dropout(tf.ones([4, 3]), tf.ones([3]), tf.ones([3]),
                                            _seed(0, 0), epsilon=0.0, rate=0.1), "epsilon"),
    (lambda ops: ops.mlp_batch_norm_dropout(tf.ones([4, 3]), tf.ones([3]), tf.ones([3]),
                                            _seed(0, 0), epsilon=float("inf"), rate=0.1),
     "epsilon"),
    (lambda ops: ops.mlp_batch_norm_dropout(tf.ones([0, 3]), tf.ones([3]), tf.ones([3]),
                                            _seed(0, 0), epsilon=1e-3, rate=0.1), "one row"),
    (lambda ops: ops.mlp_batch_norm_dropout_grad(
        tf.ones([4, 2]), tf.ones([4, 3]), tf.ones([3]), tf.ones([3]), tf.ones([3]), _seed(0, 0),
        epsilon=1e-3, rate=0.1), "dy and x must have the same shape"),
    (lambda ops: ops.mlp_batch_norm_dropout_grad(
        tf.ones([0, 3]), tf.ones([0, 3]), tf.ones([3]), tf.ones([3]), tf.ones([3]), _seed(0, 0),
        epsilon=1e-3, rate=0.1), "one row"),
])
def test_fused_kernels_reject_bad_inputs_with_a_clear_error(ops, call, words):
    with pytest.raises(tf.errors.InvalidArgumentError, match=words):
        call(ops)


def test_a_model_with_fused_kernels_trains_like_one_with_tensorflow_ops(ops):
    """Without dropout the two differ only by rounding: logits, every gradient and the moving
    statistics; with it, each layer's mask is the fused dropout's of that layer's seed."""
    images = tf.random.stateless_uniform([32, 784], seed=(1, 2))
    labels = tf.random.stateless_uniform([32], seed=(1, 3), maxval=10, dtype=tf.int32)

    def step(model):
        with tf.GradientTape() as tape:
            logits = model(images, training=True, step=tf.constant(4, tf.int64))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return [logits, *tape.gradient(loss, model.trainable_variables),
                *[v for v in model.variables if "moving" in v.name]]

    models = [MLP((40, 30), dropout=0.0, seed=3, fused_ops=fused_ops) for fused_ops in (ops, None)]
    results = [step(model) for model in models]
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    dropping = MLP((40, 30), dropout=0.25, dropout_layers=1, batch_norm=False, seed=3,
                   fused_ops=ops)
    logits = dropping(images, training=True, step=tf.constant(4, tf.int64))
    layer_seed = tf.random.experimental.stateless_fold_in(tf.constant([3, 4], tf.int64), 0)
    hidden = dropping.hidden[0](images)
    hidden = hidden * _mask(ops, hidden.shape, 0.25, tf.cast(layer_seed, tf.int64))
    np.testing.assert_allclose(logits, dropping.logits_layer(dropping.hidden[1](hidden)),
                               rtol=1e-5, atol=1e-6)


def test_with_synchronized_batch_norm_the_dropout_is_fused_and_the_batch_norm_tensorflows(ops):
    # A synchronized batch norm all-reduces its sums, so it stays TensorFlow's; the dropout after
    # it is still the fused kernel's mask of the layer's seed.
    images = tf.random.stateless_uniform([32, 784], seed=(1, 2))
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = MLP((40, 30), dropout=0.25, dropout_layers=1, seed=3, sync_batch_norm=True,
                    fused_ops=ops)

    def by_hand():
        x = model.norms[0](model.hidden[0](images), training=True)
        layer_seed = tf.random.experimental.stateless_fold_in(tf.constant([3, 4], tf.int64), 0)
        x = x * _mask(ops, x.shape, 0.25, tf.cast(layer_seed, tf.int64))
        return model.logits_layer(model.norms[1](model.hidden[1](x), training=True))

    logits = strategy.run(lambda: model(images, training=True, step=tf.constant(4, tf.int64)))
    np.testing.assert_allclose(logits, strategy.run(by_hand), rtol=1e-5, atol=1e-6)
    unfused = MLP((40, 30), dropout=0.25, dropout_layers=1, seed=3, sync_batch_norm=True)
    other = strategy.run(lambda: unfused(images, training=True, step=tf.constant(4, tf.int64)))
    assert not np.allclose(logits, other, atol=1e-3)  # Philox's masks: the check can tell


def test_auto_falls_back_to_tensorflow_ops_without_a_compiler_and_fused_says_why(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    load = lambda: fused.build_library(tmp_path / "cache")  # noqa: E731
    kernels, ops, why = fused.resolve("auto", gpus=[], loader=load)
    assert (kernels, ops) == ("tensorflow", None) and "no C++ compiler" in why
    with pytest.raises(ConfigError,
                       match="--kernels fused: no C\\+\\+ compiler.*--kernels tensorflow"):
        fused.resolve("fused", gpus=[], loader=load)
    assert fused.resolve("tensorflow", gpus=[], loader=load) == ("tensorflow", None, "")


def test_a_failed_build_names_the_compilers_error_and_leaves_no_files(tmp_path, monkeypatch):
    compiler = tmp_path / "broken-g++"
    compiler.write_text("#!/bin/sh\necho 'kernels.cc:1: error: out of cheese' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    with pytest.raises(fused.KernelBuildError, match="failed on fused_kernels.cc.*out of cheese"):
        fused.build_library(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_auto_takes_tensorflow_ops_on_a_gpu(monkeypatch):
    def loader():
        raise AssertionError("the library is not built for a GPU machine")

    kernels, ops, why = fused.resolve("auto", gpus=["GPU:0"], loader=loader)
    assert (kernels, ops) == ("tensorflow", None) and "CPU only" in why
    with pytest.raises(ConfigError, match="--kernels fused: .*CPU only"):
        fused.resolve("fused", gpus=["GPU:0"], loader=loader)


@pytest.mark.slow  # a run up to its kernels' build
def test_kernels_fused_without_a_compiler_exits_2_with_one_line(small_data, tmp_path):
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = run_module("improved", "--data-dir", small_data, "--logdir", tmp_path / "logs",
                          "--kernels", "fused", *SMALL_RUN_FLAGS, env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m experiments.improved: error: --kernels fused: no C++ "
                           "compiler"), done.stderr


def test_runs_saved_before_the_kernels_setting_resume_with_tensorflow_ops():
    values = Config().to_dict()
    del values["kernels"]
    assert Config.from_dict(values, "config.json").kernels == "tensorflow"
    with pytest.raises(ConfigError, match="unknown settings kernel"):
        Config.from_dict({**values, "kernel": "fused"}, "config.json")


def test_a_resumed_auto_run_keeps_the_kernels_it_started_with(small_data, tmp_path):
    config = Config(data_dir=str(small_data), logdir=str(tmp_path), verify_checksums=False,
                    validation_size=100, batch_size=50, epochs=1, histograms=False,
                    kernels="auto")
    run_dir = tmp_path / "run"
    first = assemble(config, run_dir, out=open(os.devnull, "w"))
    assert first.parts.kernels == "fused"
    assert json.loads((run_dir / "kernels.json").read_text())["kernels"] == "fused"
    # A run that started where the fused kernels could not be built resumes with TensorFlow's.
    (run_dir / "kernels.json").write_text(json.dumps({"kernels": "tensorflow"}))
    resumed = assemble(config, run_dir, resume=True, out=open(os.devnull, "w"))
    assert resumed.parts.kernels == "tensorflow" and resumed.parts.model.fused_ops is None
    (run_dir / "kernels.json").write_text(json.dumps({"kernels": "turbo"}))
    with pytest.raises(ConfigError, match="kernels.json: names no kernels"):
        assemble(config, run_dir, resume=True, out=open(os.devnull, "w"))


def test_an_unwritable_kernel_cache_falls_back_to_tensorflow_ops_with_a_note(tmp_path,
                                                                              monkeypatch):
    # A read-only cache (root may write anywhere, so the refusal is injected where it happens).
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fused.tempfile, "mkstemp", refuse)
    load = lambda: fused.build_library(tmp_path / "cache")  # noqa: E731
    kernels, ops, why = fused.resolve("auto", gpus=[], loader=load)
    assert (kernels, ops) == ("tensorflow", None)
    assert why.startswith(f"cannot write in {tmp_path / 'cache'}: Permission denied")
    with pytest.raises(ConfigError, match="--kernels fused: cannot write in"):
        fused.resolve("fused", gpus=[], loader=load)


def test_a_killed_builds_temporary_is_removed_and_a_live_ones_kept(tmp_path):
    dead = tmp_path / f"{fused.BUILDING}999999999-abc.so"
    live = tmp_path / f"{fused.BUILDING}{os.getpid()}-def.so"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    fused._remove_dead_builds(tmp_path)
    assert not dead.exists() and live.exists()


@pytest.mark.parametrize("share", ["directory", "library"])
def test_a_library_others_may_write_is_never_loaded_but_built_privately(tmp_path, monkeypatch,
                                                                        share):
    built = []
    monkeypatch.setattr(fused, "_build", lambda path: (built.append(path), path.touch()))
    cache = tmp_path / "cache"
    cache.mkdir()
    shared = fused.library_path(cache)
    if share == "directory":
        cache.chmod(0o777)
    else:
        shared.write_bytes(b"anyone's code")
        shared.chmod(0o666)
    path = fused.build_library(cache)
    assert path.parent != cache and built == [path]
    assert (path.parent.stat().st_mode & 0o077) == 0  # private to this user
    shutil.rmtree(path.parent)  # what load() does once it has loaded a private build
    cache.chmod(0o755)
    if share == "library":
        shared.chmod(0o644)
        assert fused.build_library(cache) == shared  # this user's, no one else's: trusted


@pytest.mark.parametrize("kernels", ["fused", "auto"])
@pytest.mark.slow
def test_a_fused_run_resumes_on_tensorflow_ops_where_the_kernels_cannot_be_built(
        small_data, tmp_path, monkeypatch, kernels):
    args = ["--data-dir", small_data, "--logdir", tmp_path, "--run-name", "moved", "--epochs", 2,
            "--kernels", kernels, *SMALL_RUN_FLAGS]
    assert run_module("improved", *args).returncode == 0
    (tmp_path / "moved" / "results.json").unlink()  # as if killed before its report

    def cannot_build(cache_dir=None):
        raise fused.KernelBuildError("no C++ compiler 'g++' found (set $CXX or install g++)")

    monkeypatch.setattr(fused, "load", cannot_build)
    done = run_module("improved", *args, "--resume")
    assert done.returncode == 0, done.stderr
    assert "continues after epoch 2 on TensorFlow's ops" in done.stderr
    recorded = json.loads((tmp_path / "moved" / "kernels.json").read_text())
    assert recorded["continued_on_tensorflow_ops"] == [
        {"after_epoch": 2, "why": "no C++ compiler 'g++' found (set $CXX or install g++)"}]
    assert json.loads((tmp_path / "moved" / "results.json").read_text())["kernels"] == "tensorflow"
    # A new run that insists on them is refused with advice the program accepts.
    refused = run_module("improved", *args[:5], "fresh", *args[6:], "--kernels", "fused")
    assert refused.returncode == 2 and "or use --kernels tensorflow" in refused.stderr
    accepted = run_module("improved", *args[:5], "fresh", *args[6:], "--kernels", "tensorflow",
                              "--epochs", 1)
    assert accepted.returncode == 0, accepted.stderr


def test_the_kernel_cache_key_tells_cpus_apart_where_cpuinfo_has_no_model_name(tmp_path):
    from mlp.machine import cpu_model, cpu_signature

    # aarch64's /proc/cpuinfo: no "model name", the instruction set in "Features".
    cpus = []
    for features in ("fp asimd evtstrm aes pmull sha1 sha2 crc32", "fp asimd sve sve2 bf16"):
        path = tmp_path / f"cpuinfo-{len(cpus)}"
        path.write_text(f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {features}\n"
                        "CPU implementer\t: 0x41\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n"
                        f"Features\t: {features}\n")
        cpus.append((cpu_signature(path), cpu_model(path)))
    assert cpus[0][0] != cpus[1][0] and "sve2" in cpus[1][0]
    assert cpus[0][1] == cpus[1][1]  # the model name alone, the key before, cannot tell them apart


def test_half_float_packets_are_turned_off_only_where_the_cpu_has_them(tmp_path):
    from mlp.machine import cpu_signature

    # Sapphire Rapids: with AVX512-FP16 on, g++ 12 cannot compile Eigen's half-float packets.
    flags = "fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_fp16 amx_tile"
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: {flags}\n")
    assert fused.compile_flags(cpu_signature(path))[-1] == "-mno-avx512fp16"
    assert "-march=native" in fused.compile_flags(cpu_signature(path))
    # AMD Zen 4 has AVX-512 and bfloat16 but no half-float arithmetic: the flags stay as they are.
    path.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: "
                    f"{flags.replace(' avx512_fp16', '')}\n")
    assert fused.compile_flags(cpu_signature(path)) == fused.COMPILE_FLAGS


def test_a_built_library_is_on_disk_before_its_name_is(tmp_path, monkeypatch):
    import subprocess

    events = []

    def compile_quickly(command, **kwargs):
        output = command[command.index("-o") + 1]
        with open(output, "wb") as f:
            f.write(b"\x7fELF")
        return subprocess.CompletedProcess(command, 0, "", "")

    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(fused.shutil, "which", lambda name: "/usr/bin/g++")
    monkeypatch.setattr(fused.subprocess, "run", compile_quickly)
    monkeypatch.setattr(fused.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(fused.os, "replace",
                        lambda a, b: (events.append("rename"), real_replace(a, b)))
    path = fused.build_library(tmp_path / "cache")
    assert path.read_bytes() == b"\x7fELF" and events == ["fsync", "rename"]


def _compile_as_the_linker_does(monkeypatch, built):
    """Stand in for g++: write the output file with the modes the linker gives (0777 less the
    umask), and count the builds."""
    import subprocess

    def compile_quickly(command, **kwargs):
        output = command[command.index("-o") + 1]
        os.unlink(output)
        with open(os.open(output, os.O_WRONLY | os.O_CREAT, 0o777), "wb") as f:
            f.write(b"\x7fELF")
        built.append(output)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(fused.shutil, "which", lambda name: "/usr/bin/g++")
    monkeypatch.setattr(fused.subprocess, "run", compile_quickly)


def test_under_umask_002_the_cache_is_made_trusted_and_reused(tmp_path, monkeypatch):
    built = []
    _compile_as_the_linker_does(monkeypatch, built)
    cache = tmp_path / "home" / "cache" / "kernels"
    mask = os.umask(0o002)
    try:
        first = fused.build_library(cache)
        second = fused.build_library(cache)
    finally:
        os.umask(mask)
    assert first == second == fused.library_path(cache) and len(built) == 1
    for made in (first, cache, cache.parent, cache.parent.parent):
        assert oct(made.stat().st_mode & 0o777) == "0o755", made


@pytest.mark.parametrize("parent_mode, trusted", [(0o775, False), (0o1777, True), (0o755, True)])
def test_the_cache_is_trusted_only_if_no_directory_above_it_lets_others_replace_it(
        tmp_path, monkeypatch, parent_mode, trusted):
    built = []
    _compile_as_the_linker_does(monkeypatch, built)
    monkeypatch.setattr(fused.tempfile, "tempdir", str(tmp_path / "private"))
    (tmp_path / "private").mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(parent_mode)  # group-writable; world-writable but sticky, as /tmp; private
    cache = shared / "me" / "kernels"
    path = fused.build_library(cache)
    assert (path == fused.library_path(cache)) == trusted
    assert path.parent.parent == (cache.parent if trusted else tmp_path / "private")


def test_the_library_checked_is_the_one_loaded_and_a_private_build_is_removed(
        tmp_path, monkeypatch):
    monkeypatch.setattr(fused, "_ops", None)
    monkeypatch.setattr(fused.tempfile, "tempdir", str(tmp_path))
    loaded = []

    def load_op_library(name):
        loaded.append((name, os.path.realpath(name), Path(name).read_bytes()))
        return "ops"

    monkeypatch.setattr(fused.tf, "load_op_library", load_op_library)
    private = Path(fused.tempfile.mkdtemp(prefix=fused.PRIVATE_PREFIX)) / "fused_kernels-x.so"
    private.write_bytes(b"\x7fELF mine")
    private.chmod(0o755)
    monkeypatch.setattr(fused, "build_library", lambda cache_dir=None: private)
    assert fused.load() == "ops"
    [(name, real, content)] = loaded
    assert name.startswith("/proc/self/fd/") and real == str(private) and content == b"\x7fELF mine"
    assert not private.parent.exists()  # a private build goes once it is loaded

    # Between the check that chose the library and its loading, it became anyone's to write.
    monkeypatch.setattr(fused, "_ops", None)
    swapped = tmp_path / "cache" / "fused_kernels-y.so"
    swapped.parent.mkdir()
    swapped.write_bytes(b"\x7fELF someone's")
    swapped.chmod(0o666)
    monkeypatch.setattr(fused, "build_library", lambda cache_dir=None: swapped)
    with pytest.raises(fused.KernelBuildError, match="others may write it; it is not loaded"):
        fused.load()
    assert len(loaded) == 1


def test_a_private_build_that_fails_leaves_no_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(fused.tempfile, "tempdir", str(tmp_path / "private"))
    (tmp_path / "private").mkdir()
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)  # not trusted: the build goes to a private directory
    with pytest.raises(fused.KernelBuildError, match="no C\\+\\+ compiler"):
        fused.build_library(cache)
    assert not list((tmp_path / "private").iterdir())
