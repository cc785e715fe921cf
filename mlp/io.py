"""Atomic file writes: a reader never sees a half-written file."""

import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path, text):
    """Write `text` to `path` via a temporary file in the same directory and a rename."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path, content):
    """Write `content` to `path` via a temporary file in the same directory and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path):
    """The JSON in `path`, or ConfigError naming the file (never a traceback)."""
    from mlp.config import ConfigError

    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read as JSON ({e}); restore it or start a new "
                          "run") from None


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class RunInUse(RuntimeError):
    """Another process holds the run directory's lock."""


class RunLock:
    """An exclusive lock on a run directory for as long as this process holds it (the kernel
    releases it on any exit, SIGKILL included), so two processes never train one run. The lock
    file is never followed through a symbolic link (whose target it would truncate), and a
    filesystem that cannot lock is refused rather than trusted: ConfigError for both."""

    def __init__(self, run_dir, wait=0.0):
        """Lock `run_dir`, waiting up to `wait` seconds for another holder to let go; RunInUse
        if it still holds it then."""
        import errno
        import fcntl
        import time

        from mlp.config import ConfigError

        self.path = Path(run_dir) / ".lock"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ConfigError(f"{self.path} is a symbolic link; a run's lock must be a plain "
                                  "file: remove the link") from None
            raise ConfigError(f"cannot open {self.path} ({e.strerror}); fix the directory's "
                              "permissions or choose another --logdir") from None
        self.file = os.fdopen(fd, "r+")
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.1)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RunInUse(f"{run_dir} is in use by another process (pid {holder}); wait for it "
                           "to finish or stop it first") from None
        except OSError as e:
            self.file.close()
            raise ConfigError(f"cannot lock {self.path} ({e.strerror or errno.errorcode.get(e.errno)}"
                              "); this filesystem does not support locks (NFS without a lock "
                              "daemon, say): use a --logdir on a local disk") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()

    def release(self):
        self.file.close()  # closing the last descriptor releases the lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
