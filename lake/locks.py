"""Inter-process locks (``flock``): released by the kernel when a holder dies, so a SIGKILL never wedges."""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path


class LockBusy(RuntimeError):
    pass


@contextmanager
def file_lock(path: Path, *, blocking: bool = True, timeout: float | None = None):
    """Hold an exclusive lock on ``path``. Non-blocking raises ``LockBusy`` at once; ``timeout`` after a wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking and deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if not blocking or (deadline is not None and time.monotonic() >= deadline):
                    raise LockBusy(f"{path.name} is held by another process") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)
