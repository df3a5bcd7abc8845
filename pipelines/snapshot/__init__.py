"""Versioned dataset snapshots: cut (``create``), read back (``catalog``), exported and loaded (``export``).

The steps are SQL files in ``sql/``; ``write`` renders and writes a snapshot's files in the formats of
``formats``, with token counts from ``tokens``. This module is the public API, so a user imports
``pipelines.snapshot`` and not its parts.
"""

from pipelines.snapshot.catalog import (
    SnapshotInUse,
    SnapshotNotFound,
    diff_snapshots,
    list_snapshots,
    remove_snapshot,
    show_snapshot,
    snapshot_references,
)
from pipelines.snapshot.create import create_snapshot, wait_for_cuts
from pipelines.snapshot.export import (
    erase_conversations,
    erase_exports,
    export_snapshot,
    load_snapshot,
    snapshots_holding,
)

__all__ = ["create_snapshot", "list_snapshots", "show_snapshot", "diff_snapshots", "export_snapshot",
           "remove_snapshot", "snapshot_references", "load_snapshot", "erase_conversations", "erase_exports", "snapshots_holding", "wait_for_cuts",
           "SnapshotNotFound", "SnapshotInUse"]
