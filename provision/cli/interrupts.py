"""SIGINT and SIGTERM stop a command as Ctrl-C does: a KeyboardInterrupt, which the command
group turns into exit 130 (``provision import --wait`` first says how to follow its batch).

The interrupt is raised where the signal lands, unless that is inside code run by ``exec`` or
``eval`` of source text (SQLAlchemy builds parts of its mappers and statements that way, lazily,
at the first query). CPython records a KeyboardInterrupt leaving such code as an unhandled ^C,
even when a caller handles it, and at exit kills the process by SIGINT whatever exit code the
command chose (bpo-1054041). A signal landing there is held instead, and raised at the next safe
point: ``raise_if_held`` in the loops that wait, and at the end of the command.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

#: The file name CPython gives code compiled from source text (``exec``, ``eval``, PyRun_String).
_SOURCE_TEXT = "<string>"

_held = threading.Event()


class Interruptible:
    """While the block runs, SIGINT and SIGTERM raise KeyboardInterrupt in it (the
    long-running commands install their own handlers); the previous handlers come back after."""

    def __init__(self) -> None:
        self._boundary: FrameType | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        # The frame of the ``with``: an interrupt is caught there at the latest.
        self._boundary = sys._getframe(1)
        _held.clear()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._interrupt)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._boundary = None
        raise_if_held()  # a signal held until the command ended still ends it

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        while frame is not None and frame is not self._boundary:
            if frame.f_code.co_filename == _SOURCE_TEXT:
                _held.set()
                return
            frame = frame.f_back
        raise KeyboardInterrupt


def raise_if_held() -> None:
    """Raise the KeyboardInterrupt of a signal that was held: a safe point calls this."""
    if _held.is_set():
        _held.clear()
        raise KeyboardInterrupt
