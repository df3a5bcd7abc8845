"""Property tests of the redaction SQL (clean_texts_of, through text_features_of): any text is cleaned without an error, the
result holds no control characters, and an e-mail address or a provider key put into any text is gone."""

from __future__ import annotations

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
