"""Training-data formats, rendered in SQL from one canonical relation, and written byte for byte reproducibly.

Every format is a ``SELECT`` in ``pipelines/snapshot/sql/formats/<name>.sql`` over ``snapshot_canonical`` (``ordinal,
conversation_id, messages, prefix_tokens, reply_positions``): a snapshot and a later ``export`` render from
the same rows, so both give the same bytes. Multi-turn formats (messages, chatml, sharegpt) have one row per
conversation; single-turn formats (alpaca, instruction) one row per assistant reply that answers a user
message, with everything before it as context (see ``sql/steps/snapshot_replies.sql``). Every row keeps its
``conversation_id``; ``num_tokens`` is there when a tokenizer measured the snapshot: the length of the
example after the model's chat template, whatever layout the text is stored in.

Reproducibility rests on fixed writers: Parquet through pyarrow with pinned settings, JSONL through DuckDB
with columns and struct fields in sorted order (sorted keys). Neither writes a timestamp.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from lake.sqlmodels import sql_str
from schemas.errors import BadInput
from schemas.snapshot import FORMATS

SQL_DIR = Path(__file__).parent / "sql"
SINGLE_TURN = ("alpaca", "instruction")  # one row per reply; the others one row per conversation

_MESSAGES = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "messages": {"messages": _MESSAGES},
    "chatml": {"text": pa.string()},
    "sharegpt": {"conversations": pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))},
    "alpaca": {"history": pa.list_(pa.list_(pa.string())), "input": pa.string(), "instruction": pa.string(),
               "output": pa.string(), "system": pa.string()},
    "instruction": {"completion": _MESSAGES, "prompt": _MESSAGES},
}
# Writer settings are part of the bytes (and of the code hash: this file is hashed).
PARQUET_OPTIONS = dict(compression="zstd", compression_level=1, row_group_size=2048, version="2.6",
                       data_page_version="1.0", use_dictionary=False, write_statistics=False)


def schema(fmt: str, with_tokens: bool) -> pa.Schema:
    """The Arrow schema of a format's files: fixed types, columns in sorted order."""
    columns = {"conversation_id": pa.string(), **_COLUMNS[fmt]}
    if with_tokens:
        columns["num_tokens"] = pa.int32()
    return pa.schema([pa.field(name, columns[name]) for name in sorted(columns)])


def sql(fmt: str) -> str:
    if fmt not in FORMATS:
        raise BadInput(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return (SQL_DIR / "formats" / f"{fmt}.sql").read_text()


def install(con: duckdb.DuckDBPyConnection) -> None:
    """Define the helper views the format queries read (``snapshot_canonical`` must exist)."""
    con.execute((SQL_DIR / "steps" / "snapshot_replies.sql").read_text())


def render(con: duckdb.DuckDBPyConnection, fmt: str, with_tokens: bool) -> pa.Table:
    """Rows of ``fmt`` for everything in ``snapshot_canonical``, by ``ordinal``, cast to the format's schema."""
    table = con.sql(sql(fmt)).to_arrow_table()
    target = schema(fmt, with_tokens)
    return table.select(target.names).cast(target)


def write(table: pa.Table, path: Path) -> None:
    """Write ``table`` as Parquet or JSONL, by the suffix of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (write_parquet if path.suffix == ".parquet" else write_jsonl)(table, path)


def write_parquet(table: pa.Table, path: Path) -> None:
    """The same rows always give the same bytes: fixed settings, and one chunk, because Parquet pages break
    where the Arrow chunks do (a shard rendered alone or within a larger render comes in other chunks)."""
    pq.write_table(table.combine_chunks(), path, **PARQUET_OPTIONS)


def write_jsonl(table: pa.Table, path: Path) -> None:
    """One JSON object per row, keys in column order (sorted, see ``schema``)."""
    with _json_writer() as cur:
        cur.register("rows", table)
        cur.execute(f"COPY (SELECT * FROM rows) TO '{sql_str(path)}' (FORMAT json)")


_writers: dict[int, duckdb.DuckDBPyConnection] = {}
_writers_lock = threading.Lock()


def _json_writer() -> duckdb.DuckDBPyConnection:
    """A cursor of the process's one JSONL-writing database (one thread: the callers write several files at
    once). A database per file took longer than the writing: a new one takes its memory fresh from the
    system, page by page (28 shards of 13 MB: 2.9 s against 1.45 s, 1.3-2.0 of them system time). Keyed by
    process, as a forked child must not share its parent's database."""
    with _writers_lock:
        db = _writers.get(os.getpid())
        if db is None:
            db = _writers[os.getpid()] = duckdb.connect(config={"threads": 1})
        return db.cursor()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
