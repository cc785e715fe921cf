"""TensorFlow's C++ start-up lines, kept off the screen unless the user asks for them.

Importing TensorFlow on a machine without a GPU prints lines such as "Could not find cuda
drivers" and "failed call to cuInit" (which reads as an error on every CPU machine). When the
user has not set TF_CPP_MIN_LOG_LEVEL, `install` sets it to 3 (only fatal C++ messages) and
drops the lines TensorFlow's import prints before its log level applies; anything else printed
during the import is passed on. A TF_CPP_MIN_LOG_LEVEL the user set is left alone, lines and all.
"""

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# Lines of C++ logging (I/W + date, or absl's note) that the import prints before the level applies.
START_UP_LINE = re.compile(r"^(?:[IW]\d{4} \S+ +\d+ \S+:\d+\] |WARNING: All log messages before "
                           r"absl::InitializeLog\(\) is called)")


def install():
    """Quiet TensorFlow's start-up from its first import on, unless the user chose a level."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as the other finders do, and runs its import with stderr filtered."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: later imports find it in sys.modules
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            with StartUpLinesDropped():
                run_module(module)

        spec.loader.exec_module = exec_module
        return spec


class StartUpLinesDropped:
    """While inside, file descriptor 2 goes to a temporary file; on leaving, its lines are passed
    on to the real stderr, except TensorFlow's start-up lines."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        kept = [line for line in self._file.read().decode(errors="replace").splitlines(True)
                if not START_UP_LINE.match(line)]
        self._file.close()
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
        return False
