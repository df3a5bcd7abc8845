"""What one Delta commit added, read from the table's log.

deltalake's API gives a version's whole file list, not what a single commit changed, and two things need the
change itself: the spool fold makes the files of its commit durable before it deletes the spool, and the
logger's turn index reads only rows that are new since it last looked (a compaction rewrites files but adds no
rows: its ``add`` actions carry ``dataChange: false``). A commit file is one JSON action per line, as the
Delta protocol defines it, so any writer's commits read the same way.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import orjson


def commit_file(table_path: Path, version: int) -> Path:
    return table_path / "_delta_log" / f"{version:020d}.json"


def added_files(table_path: Path, version: int, *, new_rows_only: bool = False) -> list[Path]:
    """Data files that commit ``version`` added; with ``new_rows_only``, only those holding new rows.

    Raises ``FileNotFoundError`` when the commit file is gone (log cleanup removes old ones).
    """
    files = []
    for line in commit_file(table_path, version).read_bytes().splitlines():
        add = orjson.loads(line).get("add") if line.strip() else None
        if add and (add.get("dataChange", True) or not new_rows_only):
            files.append(table_path / unquote(add["path"]))
    return files
