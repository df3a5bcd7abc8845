"""Alpaca: ``{"instruction", "input"?, "output", "system"?}`` records, as a JSON array or JSONL.

Each record is one exchange: the instruction, followed by the input when there is one (separated by a
blank line, as the Alpaca prompt template separates them), is the user's turn; the output is the
assistant's. An optional ``system`` becomes turn 0. Records have no ids, so conversation ids are derived
from the content.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from lake.importers.context import BadRecord, ImportContext
from lake.importers.messages import Conversation
from lake.importers.records import read_records


def parse(obj: Any) -> Conversation:
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a JSON object, found {type(obj).__name__}")
    instruction, extra = obj.get("instruction"), obj.get("input")
    if extra is not None and not isinstance(extra, str):
        raise BadRecord(f"input is {type(extra).__name__}, not text")
    prompt = f"{instruction}\n\n{extra}" if isinstance(instruction, str) and extra and extra.strip() else instruction
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": obj.get("output")}]
    if obj.get("system") is not None:
        messages.insert(0, {"role": "system", "content": obj["system"]})
    return Conversation(messages)


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    return read_records(path, ctx, parse)
