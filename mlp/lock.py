"""An exclusive lock on a directory, held for as long as this process lives: a run directory while
it trains or is exported, the data cache while a download fills it."""

import os
from pathlib import Path


class DirectoryInUse(RuntimeError):
    """Another process holds the directory's lock."""


class DirectoryLock:
    """An exclusive lock on a directory for as long as this process holds it (the kernel releases
    it on any exit, SIGKILL included), so two processes never train one run. The lock
    file is never followed through a symbolic link (whose target it would truncate), and a
    filesystem that cannot lock is refused rather than trusted: ConfigError for both."""

    def __init__(self, directory, wait=0.0):
        """Lock `directory`, waiting up to `wait` seconds for another holder to let go;
        DirectoryInUse if it still holds it then."""
        import errno
        import fcntl
        import time

        from mlp.config import ConfigError

        self.path = Path(directory) / ".lock"
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
            raise DirectoryInUse(f"{directory} is in use by another process (pid {holder}); wait "
                                 "for it to finish or stop it first") from None
        except OSError as e:
            self.file.close()
            reason = e.strerror or errno.errorcode.get(e.errno)
            raise ConfigError(f"cannot lock {self.path} ({reason}"
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
