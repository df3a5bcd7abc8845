"""The conversation lake: immutable events in a Delta table, read through DuckDB views."""

from lake.connect import connect
from lake.home import Home
from lake.store import EventStore

__all__ = ["connect", "Home", "EventStore", "ConversationLogger"]


def __getattr__(name):  # the logger pulls in threading machinery: load it on first use
    if name == "ConversationLogger":
        from lake.logger import ConversationLogger
        return ConversationLogger
    raise AttributeError(name)
