"""SIGINT and SIGTERM: the first one is noted and the run stops at the next point where stopping
loses nothing (a step boundary, or between setup, training and the final report); a second one
exits at once. No TensorFlow here, so the guard can be in place before TensorFlow is imported."""

import os
import signal
import sys


class Interrupted(Exception):
    """SIGINT or SIGTERM: the run stopped where nothing is lost; `exit_code` is 128 + the signal
    number."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


class SignalGuard:
    """First SIGINT/SIGTERM: remember it (`signum`), for the code to stop at its next safe point.
    Second: exit at once. Guards nest: an inner one shares the outer one's state."""

    active = None

    def __init__(self):
        self.signum = None
        self.previous = {}
        self.outer = None

    def __enter__(self):
        self.outer = SignalGuard.active
        if self.outer is not None:
            return self.outer
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)
        SignalGuard.active = self
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            print(f"\nsecond {signal.Signals(signum).name}: exiting without saving",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping at the next safe point "
              "(again to exit at once)", file=sys.stderr, flush=True)

    def check(self, where, continue_with):
        """Raise Interrupted if a signal came: `where` says what state the run is left in."""
        if self.signum is not None:
            raise Interrupted(f"{signal.Signals(self.signum).name}: {where}; continue with "
                              f"{continue_with}", 128 + self.signum)

    def __exit__(self, *exc):
        if self.outer is not None:
            return
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        SignalGuard.active = None
