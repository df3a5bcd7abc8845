"""Inter-process locks (``flock``): released by the kernel when a holder dies, so a SIGKILL never wedges.

An flock belongs to the open file, which a ``fork`` shares with the child: a child forked while some thread
holds a lock (a chat app's background fold) would keep it locked for as long as it lives. So a forked child
closes its copies of the lock files at once.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from schemas.errors import Busy

_held: set[int] = set()  # descriptors of the locks this process holds


class LockBusy(Busy, RuntimeError):
    """Another process holds the lock."""


@contextmanager
def file_lock(path: Path, *, blocking: bool = True, timeout: float | None = None, shared: bool = False):
    """Hold an exclusive lock on ``path`` (``shared``: one of many holders that only exclude an exclusive
    one). Non-blocking raises ``LockBusy`` at once; ``timeout`` after a wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    locked = False
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                            | (0 if blocking and deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if not blocking or (deadline is not None and time.monotonic() >= deadline):
                    raise LockBusy(f"{path.name} is held by another process") from None
                time.sleep(0.01)
        locked = True
        _held.add(fd)
        yield
    finally:
        if not locked or fd in _held:  # else a fork closed it: this is the child, fd may name another file
            _held.discard(fd)
            os.close(fd)


def _release_in_child() -> None:
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_release_in_child)
