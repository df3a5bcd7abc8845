"""Training-data formats, rendered in SQL from one canonical relation, and written byte for byte reproducibly.

Every format is a ``SELECT`` in ``pipelines/snapshot/sql/formats/<name>.sql`` over ``snapshot_canonical`` (``ordinal,
conversation_id, messages, tools, prefix_tokens, reply_positions``): a snapshot and a later ``export`` render from
the same rows, so both give the same bytes. Multi-turn formats (messages, chatml, sharegpt) have one row per
conversation; single-turn formats (alpaca, instruction) one row per assistant reply that answers a user
message, with everything before it as context (see ``sql/steps/snapshot_replies.sql``). Every row keeps its
``conversation_id``; ``num_tokens`` is there when a tokenizer measured the snapshot: the length of the
example after the model's chat template, whatever layout the text is stored in.

Turns are whole. The messages format (and instruction's message lists) holds tool calls, tool results, the
offered tools and the reasoning as ``transformers`` chat templates take them (``sql/steps/snapshot_canonical.sql``);
arguments and parameters are JSON values: Parquet's JSON type (``datasets`` reads them as mappings) and objects
in JSONL. Each other format's SQL header says what it does with tool turns and reasoning; in short, sharegpt
writes ``function_call`` and ``observation`` turns and its ``tools`` as JSON text (LLaMA-Factory's layout),
chatml renders through the tokenizer's own chat template when the snapshot has a tokenizer (``Rendering``)
and else writes calls and results the Hermes/Qwen2.5 way, and alpaca, which has no place for them, leaves out
the examples that involve tool turns (counted in the summary's ``left_out``). The reasoning is part of the
text formats only with ``snapshot.train_on_reasoning`` (the DuckDB variable ``snapshot_reasoning``).

Reproducibility rests on fixed writers: Parquet through pyarrow with pinned settings, JSONL through DuckDB
with columns and struct fields in sorted order (sorted keys). Neither writes a timestamp.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from lake.sqlmodels import sql_str
from pipelines.snapshot.chat import chat_messages, chat_tools
from schemas.errors import BadInput
from schemas.snapshot import FORMATS

SQL_DIR = Path(__file__).parent / "sql"
SINGLE_TURN = ("alpaca", "instruction")  # one row per reply; the others one row per conversation

_TOOL_CALLS = pa.list_(pa.struct([("function", pa.struct([("arguments", pa.json_()), ("name", pa.string())])),
                                   ("id", pa.string()), ("type", pa.string())]))
_MESSAGES = pa.list_(pa.struct([("content", pa.string()), ("name", pa.string()), ("reasoning_content", pa.string()),
                                ("role", pa.string()), ("tool_call_id", pa.string()), ("tool_calls", _TOOL_CALLS)]))
_TOOLS = pa.list_(pa.struct([("function", pa.struct([("description", pa.string()), ("name", pa.string()),
                                                       ("parameters", pa.json_())])), ("type", pa.string())]))
_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "messages": {"messages": _MESSAGES, "tools": _TOOLS},
    "chatml": {"text": pa.string()},
    "sharegpt": {"conversations": pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())])),
                 "tools": pa.string()},
    "alpaca": {"history": pa.list_(pa.list_(pa.string())), "input": pa.string(), "instruction": pa.string(),
               "output": pa.string(), "system": pa.string()},
    "instruction": {"completion": _MESSAGES, "prompt": _MESSAGES, "tools": _TOOLS},
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


@dataclass(frozen=True)
class Rendering:
    """What shapes a format's text besides its rows: whether the reasoning is part of the training text
    (``snapshot.train_on_reasoning``), and the tokenizer whose chat template renders chatml (None: ChatML as
    ``sql/formats/chatml.sql`` writes it)."""

    reasoning: bool = False
    tokenizer: Any = None


def render(con: duckdb.DuckDBPyConnection, fmt: str, with_tokens: bool, rendering: Rendering) -> pa.Table:
    """Rows of ``fmt`` for everything in ``snapshot_canonical``, by ``ordinal``, cast to the format's schema."""
    con.execute("SET VARIABLE snapshot_reasoning = $reasoning", {"reasoning": rendering.reasoning})
    if fmt == "chatml" and rendering.tokenizer is not None:
        table = _chatml_by_template(con, rendering)
    else:
        table = con.sql(sql(fmt)).to_arrow_table()
    target = schema(fmt, with_tokens)
    return table.select(target.names).cast(target)


def _chatml_by_template(con: duckdb.DuckDBPyConnection, rendering: Rendering) -> pa.Table:
    """chatml as the tokenizer's own chat template writes each conversation, offered tools included: a
    template is Jinja, so this one rendering runs in Python (the same conversion as the token counts)."""
    rows = con.sql("SELECT conversation_id, messages, tools, prefix_tokens[len(messages)] AS num_tokens "
                   "FROM snapshot_canonical ORDER BY ordinal").to_arrow_table()
    texts = [rendering.tokenizer.apply_chat_template(chat_messages(messages, rendering.reasoning),
                                                     tools=chat_tools(tools), tokenize=False)
             for messages, tools in zip(rows.column("messages").to_pylist(), rows.column("tools").to_pylist())]
    return rows.append_column("text", pa.array(texts, pa.string()))


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
