"""Property tests of the redaction SQL (clean_texts_of, through text_features_of): any text is cleaned without an error, the
result holds no control characters, and an e-mail address or a provider key put into any text is gone."""

from __future__ import annotations

import json
import re

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lake.views import apply_feature_sql

# What the cleaning removes: C0 controls but tab and newline, carriage return, DEL, C1, zero-width, BOM.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)  # any valid Unicode
EMAILS = st.from_regex(r"[a-z0-9][a-z0-9._%+-]{0,15}@[a-z0-9][a-z0-9-]{0,9}(\.[a-z0-9-]{1,8}){0,2}\.[a-z]{2,6}",
                       fullmatch=True)
EMAIL_RE = re.compile(r"[a-z0-9][a-z0-9._%+-]{0,15}@[a-z0-9][a-z0-9-]{0,9}(\.[a-z0-9-]{1,8}){0,2}\.[a-z]{2,6}")
SECRETS = st.one_of(
    st.from_regex(r"sk-(proj-|ant-api03-)?[A-Za-z0-9_-]{20,60}", fullmatch=True),
    st.from_regex(r"gh[pousr]_[A-Za-z0-9]{36}", fullmatch=True),
    st.from_regex(r"github_pat_[A-Za-z0-9_]{40,82}", fullmatch=True),
    st.from_regex(r"AKIA[A-Z0-9]{16}", fullmatch=True),
    st.from_regex(r"xox[abposr]-[0-9]{10,13}-[A-Za-z0-9-]{10,40}", fullmatch=True),
    st.from_regex(r"AIza[A-Za-z0-9_-]{35}", fullmatch=True),
    st.from_regex(r"(sk|rk)_live_[A-Za-z0-9]{16,40}", fullmatch=True),
    st.from_regex(r"hf_[A-Za-z0-9]{30,40}", fullmatch=True),
    st.from_regex(r"eyJ[A-Za-z0-9_-]{10,40}\.eyJ[A-Za-z0-9_-]{10,60}\.[A-Za-z0-9_-]{10,43}", fullmatch=True),
)
# Each example runs one query over a batch of texts (a query costs more than a text).
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def clean():
    con = duckdb.connect()
    apply_feature_sql(con)

    def run(texts: list[str]) -> list[str]:
        con.register("batch", pa.table({"event_id": [f"{i:04d}" for i in range(len(texts))],
                                        "event_type": ["message"] * len(texts), "role": ["assistant"] * len(texts),
                                        "content": texts}))
        return [r[0] for r in con.execute("SELECT clean_content FROM text_features_of('batch') ORDER BY event_id").fetchall()]

    return run


@SETTINGS
@given(st.lists(TEXT, min_size=1, max_size=20))
def test_any_text_is_cleaned(clean, texts):
    cleaned = clean(texts)
    assert len(cleaned) == len(texts)
    for text in cleaned:
        assert not CONTROL.search(text) and "\r" not in text
        assert text == text.strip(" \t\n")
        assert "\n\n\n" not in text and not re.search(r"[ \t]\n", text)


@SETTINGS
@given(st.lists(st.tuples(TEXT, EMAILS, TEXT), min_size=1, max_size=10))
def test_an_inserted_email_is_gone(clean, cases):
    for (_, email, _), text in zip(cases, clean([f"{before} {email} {after}" for before, email, after in cases]), strict=True):
        assert email not in text


@SETTINGS
@given(st.lists(st.tuples(TEXT, SECRETS, TEXT), min_size=1, max_size=10))
def test_an_inserted_secret_is_gone(clean, cases):
    for (_, secret, _), text in zip(cases, clean([f"{before} {secret} {after}" for before, secret, after in cases]), strict=True):
        assert secret not in text


# -- tool-call arguments: JSON in, JSON out -------------------------------------------------------------------
PLANTED = st.builds(lambda before, email, after: f"{before} {email} {after}", TEXT, EMAILS, TEXT)
JSON_VALUES = st.recursive(
    st.one_of(TEXT, PLANTED, st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def clean_arguments():
    from schemas.events import MessageLogged, events_to_table

    con = duckdb.connect()
    apply_feature_sql(con)

    def run(arguments: list[str]) -> list[tuple[str, list[str]]]:
        con.register("calls", events_to_table([
            MessageLogged(conversation_id="c", turn_index=i, role="assistant", tool_calls=[{"name": "f", "arguments": a}])
            for i, a in enumerate(arguments)]))
        return con.execute("SELECT clean_tool_calls[1].arguments, redaction_rules FROM message_features_of('calls', "
                           "carry := ['event_id', 'turn_index']) ORDER BY turn_index").fetchall()

    return run


@SETTINGS
@given(st.lists(st.tuples(st.dictionaries(st.text(max_size=12), JSON_VALUES, min_size=1, max_size=4), st.booleans(),
                          st.booleans()), min_size=1, max_size=8))
def test_redacted_arguments_are_json_without_the_planted_values(clean_arguments, cases):
    """Any JSON object (escapes of every kind, written compact or spaced, ASCII-only or not) stays JSON when
    e-mail addresses planted in its strings are redacted, and the addresses are gone."""
    written = [json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":") if compact else None)
               for value, ascii_only, compact in cases]
    for original, (cleaned, rules) in zip(written, clean_arguments(written), strict=True):
        decoded = json.dumps(json.loads(cleaned), ensure_ascii=False)  # JSON, whatever was redacted
        planted = re.findall(r" (\S+@\S+) ", json.dumps(json.loads(original), ensure_ascii=False))
        assert not [email for email in planted if EMAIL_RE.fullmatch(email) and email in decoded]
        if not rules:
            assert cleaned == original  # nothing redacted: as written
        else:  # placeholders went in (and the text was cleaned), the rest is the same JSON: same objects and
            # arrays, members in the same order, true, false, null
            assert _shape(cleaned) == _shape(original)


def _shape(text: str):
    """A JSON text's structure: objects as their members' values in order, every string and number as one kind
    of scalar (a redacted number becomes a string; the cleaning takes control characters out of keys too)."""
    def shape(value):
        if isinstance(value, tuple):
            return ("object", [shape(v) for v in value[1]])
        if isinstance(value, list):
            return [shape(v) for v in value]
        return value if value is None or isinstance(value, bool) else "scalar"
    return shape(json.loads(text, object_pairs_hook=lambda pairs: ("object", [v for _, v in pairs])))
