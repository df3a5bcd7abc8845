"""Property tests for the importers: any input gives rows or quarantined records with reasons, never a crash.

The readers are driven directly (no Delta commit) so that hypothesis can try many inputs quickly; one test
runs the whole ``ingest_files`` on arbitrary files.
"""

from __future__ import annotations

import json
import string

import pyarrow as pa

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lake.home import Home
from lake.importers import FORMATS, openai, openai_sql
from lake.importers.assemble import connection, lake_rows
from lake.importers.context import ImportContext
from lake.importers.messages import MessageRows
from lake.importers.source import line_offsets
from lake.ingest import ingest_files
from lake.store import first_deliveries
from schemas.events import parse_event

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=40) | st.sampled_from(["", " ", "\u3000\n", "\x00", "ok", "a\u2028b", "\ud800", "\U0001f600"])
roles = st.sampled_from(["user", "assistant", "system", "tool", "developer", "function", "bot", "USER", "",
                        "function_call", "observation"]) | json_values
contents = texts | json_values | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_text"]), "text": texts | json_values}),
    max_size=3)
tool_calls = st.lists(st.fixed_dictionaries({}, optional={
    "id": texts, "type": st.just("function"),
    "function": st.fixed_dictionaries({}, optional={"name": texts, "arguments": texts | json_values})}), max_size=2)
messages = st.fixed_dictionaries({}, optional={"role": roles, "content": contents | st.none(), "name": texts,
                                               "tool_calls": tool_calls | json_values, "tool_call_id": texts,
                                               "function_call": json_values, "reasoning_content": texts})
records = st.fixed_dictionaries({}, optional={"messages": st.lists(messages, max_size=5) | json_values,
                                              "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"),
                                                  "function": st.fixed_dictionaries({"name": texts})}), max_size=2)
                                              | json_values | texts,
                                              "conversations": st.lists(st.fixed_dictionaries(
                                                  {}, optional={"from": roles, "value": contents}), max_size=4),
                                              "instruction": texts | json_values, "output": texts | json_values,
                                              "event_type": st.sampled_from(["message", "feedback", "tag"]),
                                              "conversation_id": texts, "turn_index": json_values,
                                              "role": roles, "content": contents, "rating": json_values})
lines = st.one_of(records.map(lambda r: json.dumps(r).encode()), json_values.map(lambda v: json.dumps(v).encode()),
                  st.binary(max_size=60), st.text(string.printable, max_size=60).map(str.encode))


def read_and_check(tmp_path, fmt: str, data: bytes) -> None:
    """Run a reader on ``data``: a one-line ValueError (nothing readable) or consistent counts and valid rows."""
    path = tmp_path / f"input.{fmt}"
    path.write_bytes(data)
    ctx = ImportContext(Home.resolve(tmp_path / "home"), path, fmt)
    try:
        rows = [row for t in FORMATS[fmt](path, ctx) for row in t.to_pylist()]
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert 0 <= ctx.quarantined <= ctx.read
    assert (ctx.read > ctx.quarantined) == bool(rows)  # a record that was not quarantined gave events
    for q in ctx.quarantine.rows:
        assert q["reason"] and "\n" not in q["reason"]
        assert q["location"].startswith(f"{ctx.path}:")
    for row in rows:  # whatever landed passes the event models, however it was read
        parse_event({k: v for k, v in row.items() if v is not None and k != "metadata"})


@SETTINGS
@given(fmt=st.sampled_from(["openai", "sharegpt", "alpaca", "events"]), body=st.lists(lines, max_size=8))
def test_any_lines_give_rows_or_reasons(tmp_path_factory, fmt, body):
    read_and_check(tmp_path_factory.mktemp("p"), fmt, b"\n".join(body) + b"\n")


@SETTINGS
@given(fmt=st.sampled_from(["chatgpt", "openwebui", "sharegpt", "alpaca", "openai"]),
       document=st.lists(records | json_values | st.fixed_dictionaries(
           {"mapping": st.dictionaries(st.text(max_size=3), st.fixed_dictionaries(
               {}, optional={"message": st.none() | st.fixed_dictionaries(
                   {}, optional={"author": st.fixed_dictionaries({}, optional={"role": roles}),
                                 "content": st.fixed_dictionaries({}, optional={"parts": st.lists(texts | json_values)}),
                                 "create_time": json_values}),
                   "parent": st.none() | st.text(max_size=3)}), max_size=4),
            "current_node": st.none() | st.text(max_size=3)}) | st.fixed_dictionaries(
           {"id": texts, "chat": st.fixed_dictionaries({}, optional={
               "messages": st.lists(messages | json_values, max_size=3),
               "history": st.fixed_dictionaries({}, optional={
                   "currentId": texts, "messages": st.dictionaries(st.text(max_size=3), st.fixed_dictionaries(
                       {}, optional={"parentId": st.none() | st.text(max_size=3), "role": roles,
                                     "content": contents, "timestamp": json_values}), max_size=3)})})}),
           max_size=4))
def test_any_document_gives_rows_or_reasons(tmp_path_factory, fmt, document):
    read_and_check(tmp_path_factory.mktemp("p"), fmt, json.dumps(document).encode())


@SETTINGS
@given(body=st.lists(records.map(lambda r: json.dumps(r).encode()) | st.lists(messages, max_size=4).map(
    lambda ms: json.dumps({"messages": ms}).encode()), min_size=1, max_size=8).flatmap(
    lambda ls: st.lists(st.sampled_from(ls), min_size=len(ls), max_size=2 * len(ls))))  # with repeated lines
def test_fast_path_vouches_only_for_lines_read_the_same_way_per_line(tmp_path_factory, body):
    """What DuckDB takes, the per-line reader takes too and turns into the very same rows."""
    tmp = tmp_path_factory.mktemp("p")
    chunk = b"\n".join(body) + b"\n"
    ctx = ImportContext(Home.resolve(tmp / "home"), tmp / "x.jsonl", "openai")
    with connection() as con:
        fast = openai_sql.clean_lines(con, chunk, line_offsets(chunk), 1, openai.ROLE_MAP, ctx)
    slow, accepted = MessageRows("openai"), set()
    for n, raw in enumerate(body, 1):
        try:
            slow.add(n, openai.parse(json.loads(raw)))
            accepted.add(n)
        except ValueError:
            pass
    vouched = set(range(1, len(body) + 1)) - set(fast.leftover)
    assert vouched <= accepted and fast.clean == len(vouched)
    expected = lake_rows(slow.table(), ctx)
    expected = expected.filter(pa.array([r in vouched for r in slow.table().column("record").to_pylist()], pa.bool_()))
    # A line repeated verbatim is not read again: its events are counted, not emitted.
    assert fast.rows.num_rows + fast.repeated == expected.num_rows
    key = ["event_id", "conversation_id", "message_id", "turn_index", "role", "content"]
    assert (first_deliveries(fast.rows).select(key).sort_by("event_id")
            .equals(first_deliveries(expected).select(key).sort_by("event_id")))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300) | st.lists(lines, max_size=5).map(b"\n".join))
def test_ingest_raises_nothing_but_the_one_line_value_error(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("p")
    path = tmp / "input"
    path.write_bytes(data)
    try:
        [report] = ingest_files(tmp / "home", [path])
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert report.read >= report.quarantined
        assert (report.imported + report.duplicates > 0) == (report.read > report.quarantined)


def test_the_sql_path_knows_every_character_python_strips():
    assert set(openai_sql.PY_WHITESPACE) == {c for c in map(chr, range(0x110000)) if c.isspace()}
