"""Versioned dataset snapshots: cut (``create``), read back (``catalog``), exported and loaded (``export``).

The steps are SQL files in ``sql/``; ``write`` renders and writes a snapshot's files in the formats of
``formats``, with token counts from ``tokens``. This module is the public API, so a user imports
``pipelines.snapshot`` and not its parts.

The parts load on first use: ``chatlake sql`` needs only the catalog's views (importing this package for
them), and the cut and the exports would add a tenth of a second to every query's start-up.
"""

from __future__ import annotations

import importlib

_PARTS = {
    "catalog": ("SnapshotInUse", "SnapshotNotFound", "diff_snapshots", "list_snapshots", "remove_snapshot",
                "show_snapshot", "snapshot_references"),
    "create": ("create_snapshot", "wait_for_cuts"),
    "export": ("erase_conversations", "erase_exports", "export_snapshot", "load_snapshot", "snapshots_holding"),
}
_WHERE = {name: part for part, names in _PARTS.items() for name in names}

__all__ = ["create_snapshot", "list_snapshots", "show_snapshot", "diff_snapshots", "export_snapshot",
           "remove_snapshot", "snapshot_references", "load_snapshot", "erase_conversations", "erase_exports",
           "snapshots_holding", "wait_for_cuts", "SnapshotNotFound", "SnapshotInUse"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
