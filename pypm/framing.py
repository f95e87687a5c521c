"""Length-prefixed pickles over a pipe: the protocol between pypm and its helper processes
(pypm.extractor's workers, pypm.fetchchild's download process). Both ends are pypm's own code,
and nothing else can write to those pipes; raw file descriptors, so a message is one `write`
(or a few, on a full pipe) and nothing is held in a Python buffer."""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any, Callable

__all__ = ["send", "send_pickled", "recv", "dumps_or", "note_origin"]


def send(fd: int, obj: Any) -> None:
    """Write `obj` as one message."""
    send_pickled(fd, pickle.dumps(obj))


def send_pickled(fd: int, data: bytes) -> None:
    """Write a message pickled already (see `dumps_or`)."""
    view = memoryview(struct.pack("<I", len(data)) + data)
    while view:  # a pipe may take less than all of it at once
        view = view[os.write(fd, view):]


def recv(fd: int) -> Any:
    """The next message, or None at end-of-file (the other end closed, or died mid-message)."""

    def exactly(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            got = os.read(fd, n - len(buf))
            if not got:
                return None
            buf += got
        return buf

    head = exactly(4)
    if head is None:
        return None
    body = exactly(struct.unpack("<I", head)[0])
    return None if body is None else pickle.loads(body)


def dumps_or(obj: Any, fallback: Callable[[], Any]) -> bytes:
    """`obj` pickled, or `fallback()` pickled when it does not pickle (an exception carrying
    something unpicklable: its text still goes across)."""
    try:
        return pickle.dumps(obj)
    except Exception:
        return pickle.dumps(fallback())


def note_origin(exc: BaseException, where: str) -> BaseException:
    """`exc`, about to be handed to the parent, with the helper's traceback added as a note when
    it is a bug rather than pypm's own error: the parent's traceback (`--verbose`,
    `PYPM_TRACEBACK`) ends where it re-raises the exception, and a pickled exception carries no
    traceback of its own. Notes live in its `__dict__`, which pickling keeps."""
    from .errors import PypmError

    if not isinstance(exc, PypmError) and isinstance(exc, Exception):
        import traceback

        try:
            exc.add_note(f"in {where}:\n" + "".join(traceback.format_exception(exc)).rstrip())
        except Exception:  # pragma: no cover - a note is a courtesy
            pass
    return exc
