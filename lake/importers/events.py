"""chatlake events as JSON lines, the shape ``chatlake schema`` prints (spool segments are such files too).

Every line is validated by the event models themselves (``schemas.events.parse_event``), so whatever a
user writes by hand is held to the same rules as the logger's events; the reason for a rejection names the
field. Events keep their own ``event_id`` and ``source``. A line without an ``event_id`` gets one derived
from its text and its ``occurred_at`` (0 ms without one), so importing the file again adds nothing; an
``event_id`` that is given must have the shape of the ids chatlake makes (a UUID).

A file may not erase: an ``erasure`` event is quarantined with the reason. Erasure is a person's request
(``chatlake forget``), which removes the bytes too; one carried in a file would hide another user's messages
from every view while their text stayed on disk.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from lake.importers.context import BadRecord, ImportContext
from lake.importers.source import line_chunks, lines, load_json
from schemas.events import ErasureRequested, EventBase, events_to_table, parse_event
from schemas.ids import stable_id, to_ms


def parse(raw: bytes) -> EventBase:
    obj = load_json(raw)
    if not isinstance(obj, dict):
        raise BadRecord(f"expected a JSON object, found {type(obj).__name__}")
    event = parse_event(obj)
    if isinstance(event, ErasureRequested):
        raise BadRecord("an erasure cannot be imported: erasure is requested by a person, with chatlake forget")
    if "event_id" not in obj:
        ms = to_ms(event.occurred_at) if "occurred_at" in obj else 0
        event = event.model_copy(update={"event_id": stable_id(ms, b"events\x1f" + raw.strip())})
    return event


def read(path, ctx: ImportContext) -> Iterator[pa.Table]:
    for first, chunk in line_chunks(path, ctx.progress, reject=ctx.pass_cap):
        events = []
        for n, raw in lines(first, chunk):
            ctx.read += 1
            try:
                events.append(parse(raw))
            except ValueError as exc:
                ctx.reject(f"line {n}", str(exc), raw)
        yield events_to_table(events)
