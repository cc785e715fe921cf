"""Batch norm and dropout in training as fused CPU kernels, and the choice between them and
TensorFlow's own ops (--kernels).

On a 2-core CPU, a layer's batch norm and dropout cost about as much as its matrix products
(docs/speed.md): TensorFlow spends a dozen element-wise ops on them, each a pass over the batch,
and Philox draws the masks. mlp/fused_kernels.cc does a layer's batch norm and dropout in two
passes forward and two backward, with masks from a cheap counter-based hash (the file says how).
Same batch norm as mlp/layers.py to float32 rounding; the masks are other random draws of the
same distribution, still a pure function of (seed, step, layer). Adam's update is one kernel
too, with the L2 term's gradient 2 l2 W folded into its one pass (MlpApplyAdam; see
mlp/optim.py).

The library is compiled with the machine's C++ compiler ($CXX, default g++) on first use, for this
CPU (-march=native), and cached under the data cache (see mlp.machine.cache_dir) by a key of the
source, the compiler and its flags, TensorFlow's version and build flags and the CPU (its model
and instruction-set flags): a few seconds, once per machine.

    kernels, ops, why = resolve("auto")   # ("fused", ops, "") or ("tensorflow", None, reason)
"""

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import tensorflow as tf

from mlp.config import KERNELS, ConfigError
from mlp.machine import cache_dir as default_cache_dir
from mlp.machine import cpu_signature

# What `auto` resolves to.
RESOLVED = tuple(kernels for kernels in KERNELS if kernels != "auto")
SOURCE = Path(__file__).with_name("fused_kernels.cc")
BUILD_TIMEOUT = 600
# No fused multiply-adds (-ffp-contract=off): MlpApplyAdam then rounds as TensorFlow's
# ResourceApplyAdam does, bit for bit. -fno-math-errno lets sqrt vectorize.
COMPILE_FLAGS = ("-shared", "-fPIC", "-O3", "-march=native", "-ffp-contract=off",
                 "-fno-math-errno", "-w")
# Where the CPU has AVX512-FP16 (Intel Sapphire Rapids and later), -march=native turns on Eigen's
# half-float packet math, which GCC 12 cannot compile (missing _mm256_castsi256_ph). The kernels
# use no half floats, so that extension is turned off there.
NO_HALF_FLOAT_FLAGS = ("-mno-avx512fp16",)

# A build's temporary file is <BUILDING><pid>-<random>.so beside the library.
BUILDING = ".building-"

# The loaded library. TensorFlow registers a library's ops once per process, so a process loads
# one copy, whichever cache it came from.
_ops = None


class KernelBuildError(RuntimeError):
    """The fused kernels cannot be built or loaded here; the message says why."""


def compile_flags(cpu=None):
    """The compiler's flags for this CPU (`cpu`: its signature, default this machine's)."""
    features = (cpu if cpu is not None else cpu_signature()).split()
    return COMPILE_FLAGS + (NO_HALF_FLOAT_FLAGS if "avx512_fp16" in features else ())


def _build_flags():
    """Every flag of the build command: ours for this CPU, then TensorFlow's."""
    return [*compile_flags(), *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]


def library_path(cache_dir=None):
    """Where this machine's build of the library is (or goes) in `cache_dir`."""
    key = hashlib.sha256("\0".join([SOURCE.read_text(), tf.__version__, *_build_flags(),
                                    cpu_signature(), _compiler()]).encode()).hexdigest()[:16]
    return Path(cache_dir or default_cache_dir() / "kernels") / f"fused_kernels-{key}.so"


def _compiler():
    return os.environ.get("CXX") or "g++"


def load(cache_dir=None):
    """The ops module of the fused kernels, built first if this machine has not built them;
    KernelBuildError says why it cannot be."""
    global _ops
    if _ops is None:
        path = build_library(cache_dir)
        try:
            _ops = _load_checked(path)
        finally:
            _discard_private_build(path)  # loaded (or refused): its copy is of no more use
    return _ops


def _load_checked(path):
    """Load the library at `path` after checking the very file that is loaded: it is opened
    without following a link, its owner and modes are checked on the open file, and TensorFlow
    loads it through that descriptor, so no one can swap it between the check and the load."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise KernelBuildError(f"cannot open {path}: {e.strerror}") from None
    try:
        if not _private_status(os.fstat(fd)):
            raise KernelBuildError(f"{path} belongs to another user or others may write it; "
                                   "it is not loaded: delete it to build it again")
        opened = f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else str(path)
        try:
            return tf.load_op_library(opened)
        except (tf.errors.OpError, OSError) as e:
            raise KernelBuildError(f"cannot load {path}: {str(e).splitlines()[0]}; delete it "
                                   "to build it again") from None
    finally:
        os.close(fd)


PRIVATE_PREFIX = "mlp-kernels-"


def _discard_private_build(path):
    """Remove `path`'s directory if it is a private build's (see `build_library`)."""
    if (path.parent.name.startswith(PRIVATE_PREFIX)
            and path.parent.parent == Path(tempfile.gettempdir())):
        shutil.rmtree(path.parent, ignore_errors=True)


def build_library(cache_dir=None):
    """The compiled library's path in `cache_dir` (default: the data cache's kernels/), compiled
    first if it is not there; KernelBuildError says why it cannot be. A library is loaded into
    the process, so it is trusted only from a directory that belongs to this user, that no one
    else may write and whose every parent only this user or root may change, and only as a file
    of this user's that no one else may write; otherwise it is built again into a private
    directory (which `load` removes once the library is loaded)."""
    path = library_path(cache_dir)
    if not (_trusted_directory(path.parent) and (not os.path.lexists(path) or _private(path))):
        path = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX)) / path.name
    if not path.exists():
        try:
            _build(path)
        except KernelBuildError:
            _discard_private_build(path)
            raise
    return path


def _private(path):
    """Whether `path` (if it exists) is this user's, not a link, and not group/world-writable."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return True  # made by this process when the library is built
    except OSError:
        return False
    return _private_status(status)


def _private_status(status):
    return (status.st_uid == os.getuid() and not stat.S_ISLNK(status.st_mode)
            and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _trusted_directory(directory):
    """Whether `directory` is private (see `_private`) and no directory above it (links
    resolved) lets anyone but this user or root rename or replace what it holds: each belongs to
    this user or root and only its owner may write it, or it is sticky (as /tmp), so others
    cannot move what is not theirs."""
    if not _private(directory):
        return False
    for parent in Path(os.path.realpath(directory)).parents:
        try:
            status = os.stat(parent)
        except FileNotFoundError:
            continue  # made by the build, with its own modes
        except OSError:
            return False
        if status.st_uid not in (os.getuid(), 0):
            return False
        if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not status.st_mode & stat.S_ISVTX:
            return False
    return True


def _make_directories(directory):
    """Make `directory` and any missing parent as rwxr-xr-x whatever the umask (under umask
    002 they would be group-writable, and then never trusted)."""
    missing = []
    for candidate in [directory, *directory.parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    for made in reversed(missing):
        try:
            made.mkdir()
        except FileExistsError:
            continue  # another process made it meanwhile
        os.chmod(made, LIBRARY_MODE)


# The cache's directories and the library: this user's to write, anyone's to read and run.
LIBRARY_MODE = 0o755


def _build(path):
    compiler = _compiler()
    if shutil.which(compiler) is None:
        raise KernelBuildError(f"no C++ compiler {compiler!r} found (set $CXX or install g++)")
    try:
        _make_directories(path.parent)
        _remove_dead_builds(path.parent)
        # Another process may build the same file at the same time: each writes its own
        # temporary file, named after its process, and renames it into place, which is atomic.
        handle, temporary = tempfile.mkstemp(prefix=f"{BUILDING}{os.getpid()}-", suffix=".so",
                                             dir=path.parent)
        os.close(handle)
    except OSError as e:
        raise KernelBuildError(f"cannot write in {path.parent}: {e.strerror}") from None
    # The libraries TensorFlow's link flags name come after the source that needs them.
    command = [compiler, str(SOURCE), "-o", temporary, *_build_flags()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line]
            raise KernelBuildError(f"{compiler} failed on {SOURCE.name}: "
                                   f"{(errors or done.stderr.splitlines() or ['no output'])[0]}")
        os.chmod(temporary, LIBRARY_MODE)  # the linker's modes follow the umask
        with open(temporary, "rb") as built:
            os.fsync(built.fileno())  # on disk before the name says it is there
        os.replace(temporary, path)
    except subprocess.TimeoutExpired:
        raise KernelBuildError(f"{compiler} took over {BUILD_TIMEOUT} s on {SOURCE.name}") from None
    except OSError as e:
        raise KernelBuildError(f"cannot write {path}: {e.strerror}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _remove_dead_builds(directory):
    """Remove the temporaries of builds whose process is gone (killed mid-build)."""
    for leftover in directory.glob(f"{BUILDING}*.so"):
        pid = leftover.name[len(BUILDING):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve(kernels, gpus=None, loader=None):
    """(the kernels a run uses, "fused" or "tensorflow"; the ops module or None; why auto did not
    take the fused ones, or ""). The fused kernels run on the CPU only; `auto` takes them where
    there is no GPU and they build. ConfigError when `fused` is asked for and cannot be had."""
    if kernels not in KERNELS:
        raise ConfigError(f"--kernels: must be one of {', '.join(KERNELS)}, got {kernels!r}")
    if kernels == "tensorflow":
        return "tensorflow", None, ""
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    try:
        if gpus:
            raise KernelBuildError("they run on the CPU only, and this machine has a GPU")
        return "fused", (loader or load)(), ""
    except KernelBuildError as e:
        if kernels == "fused":
            raise ConfigError(f"--kernels fused: {e}; or use --kernels tensorflow") from None
        return "tensorflow", None, str(e)


# The gradient functions below run only after a forward op did, so the library is loaded.
@tf.RegisterGradient("MlpDropout")
def _dropout_gradient(op, dy):
    # Dropout is a fixed mask times its input: its gradient is the same dropout of dy.
    return _ops.mlp_dropout(dy, op.inputs[1], rate=op.get_attr("rate")), None


@tf.RegisterGradient("MlpBatchNormDropout")
def _batch_norm_dropout_gradient(op, dy, _dmean, _dvariance):
    # The batch statistics feed only the moving averages, which are not differentiated.
    x, gamma, _beta, seed = op.inputs
    _y, mean, variance = op.outputs
    dx, dgamma, dbeta = _ops.mlp_batch_norm_dropout_grad(
        dy, x, gamma, mean, variance, seed, epsilon=op.get_attr("epsilon"),
        rate=op.get_attr("rate"))
    return dx, dgamma, dbeta, None


def batch_norm_dropout(ops, x, norm, rate, seed):
    """Training-mode `norm` (an mlp.layers.BatchNorm, which updates its moving statistics) and
    then dropout at `rate`, with the int pair `seed`, in one kernel; in float32, returned in x's
    dtype."""
    y, mean, variance = ops.mlp_batch_norm_dropout(
        tf.cast(x, tf.float32), norm.gamma, norm.beta, tf.cast(seed, tf.int64),
        epsilon=norm.epsilon, rate=rate)
    norm.update_moving_statistics(mean, variance)
    return tf.cast(y, x.dtype)


def dropout(ops, x, rate, seed):
    """Training-mode dropout at `rate` with the int pair `seed`, in x's dtype."""
    return tf.cast(ops.mlp_dropout(tf.cast(x, tf.float32), tf.cast(seed, tf.int64), rate=rate),
                   x.dtype)
