"""The project's one error root, and the few kinds of error a person acts on.

``ChatlakeError`` is something a person can fix: its message is the whole story, on one line, so the CLI
prints it as it is (``chatlake: error: <message>``) and anything else that escapes is a bug, shown with its
class name. Every module of the project raises these (or subclasses of them), so they live here, in the
lowest layer (``schemas`` imports nothing of ours and everything may import ``schemas``).

The kinds say what to do about it:

- ``NotFound``: the thing named does not exist; check the name (also a ``LookupError``).
- ``Busy``: someone else holds it right now; try again later.
- ``Refused``: a rule says no (a promotion gate, a snapshot still in use, something unsupported).
- ``BadInput``: the input, the config or a name is wrong; fix it (also a ``ValueError``).

The builtin bases stay, so code that catches ``ValueError`` or ``LookupError`` keeps working.
"""

from __future__ import annotations


class ChatlakeError(Exception):
    """Something a person can fix; the message is the whole story, one line."""


class NotFound(ChatlakeError, LookupError):
    """The thing named (a snapshot, a model version, a run, a file) does not exist."""


class Busy(ChatlakeError):
    """Someone else holds it (a lock, a watcher); try again later."""


class Refused(ChatlakeError):
    """A rule says no: a gate, something in use, something unsupported."""


class BadInput(ChatlakeError, ValueError):
    """The input, the config or a name is wrong."""


def one_line(exc: BaseException) -> str:
    """What to tell a person about ``exc``, on one line: the first line of its message for a ``ChatlakeError``
    or an ``OSError`` (a full disk, a permission), and the class name before it for anything else (a bug).
    The CLI, the watcher's records and failed runs all say it this way."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, (ChatlakeError, OSError)) and first:
        return first
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__
