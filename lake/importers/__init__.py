"""Import adapters, one module per format, all with one call shape.

``read(path, ctx) -> Iterator[pyarrow.Table]``: the lake-shaped batches of the file's valid records;
bad records go to ``ctx.reject`` with their location and a one-line reason, and ``ctx.read`` counts every
record seen. A ``ValueError`` means nothing of the file could be read (not JSON at all, not a database).
``lake.ingest`` appends all of a file's batches at once, so an import is one atomic, idempotent commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

from lake.importers import alpaca, chatgpt, events, llm, openai, openwebui, sharegpt
from lake.importers.context import ImportContext

Reader = Callable[[Path, ImportContext], Iterator[pa.Table]]

FORMATS: dict[str, Reader] = {
    "events": events.read,
    "openai": openai.read,
    "sharegpt": sharegpt.read,
    "alpaca": alpaca.read,
    "chatgpt": chatgpt.read,
    "openwebui": openwebui.read,
    "llm": llm.read,
}
