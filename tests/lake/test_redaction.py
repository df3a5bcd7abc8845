"""The redaction rules (lake/redaction, the macros clean_texts_of and text_features_of): every secret rule of the table with its
real-shaped example and its look-alike, phone numbers of many regions read by libphonenumber, IBANs and US
social security numbers, and which rule fired on a message (clean_messages.redaction_rules, stats_redactions)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import duckdb
import pyarrow as pa
import pytest

from lake import EventStore, connect
from lake.redaction import python_regex, rule_regex, secret_rules
from lake.views import apply_feature_sql
from schemas.errors import BadInput
from schemas.events import MessageLogged, events_to_table

RULES = secret_rules()


def _cleaner(region: str):
    con = duckdb.connect()
    apply_feature_sql(con, region)

    def clean(*texts: str) -> list[tuple[str, list[str]]]:
        con.register("batch", pa.table({"event_id": [f"{i:04d}" for i in range(len(texts))],
                                        "event_type": ["message"] * len(texts), "role": ["user"] * len(texts),
                                        "content": list(texts)}))
        return con.execute("SELECT clean_content, redaction_rules FROM text_features_of('batch') "
                           "ORDER BY event_id").fetchall()

    return clean


@pytest.fixture(scope="module")
def clean():
    """clean(texts) -> [(clean_content, redaction_rules)], default region US."""
    return _cleaner("US")


# -- secrets: one test per rule of the table -----------------------------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=[r["name"] for r in RULES])
def test_each_rule_removes_its_example(clean, rule):
    match = re.search(python_regex(rule_regex(rule)), rule["example"])
    assert match, "the example is not of the rule's format"
    secret = match.group(2)
    (text, fired), = clean(rule["example"])
    assert secret not in text and fired.count(rule["name"]) == 1 and "\ue000" not in text
    if "<URL>" not in text:  # (a URL's placeholder takes the secret's with it)
        assert rule.get("placeholder", "<SECRET>") in text
        assert match.group(1) in text and match.group(3) in text  # the context is kept


@pytest.mark.parametrize("rule", RULES, ids=[r["name"] for r in RULES])
def test_each_rules_lookalike_survives(clean, rule):
    assert clean(rule["lookalike"]) == [(rule["lookalike"], [])]


def test_a_url_with_a_port_keeps_its_port(clean):
    assert clean("https://example.com:8080/path") == [("<URL>", ["url"])]  # url_password did not fire


def test_a_rule_runs_only_where_its_keyword_is(clean):
    # the Discord pattern alone would match this; none of its keywords (base64 of an id's first digit) is in it
    lookalike = "Aaaaaaaaaaaaaaaaaaaaaaaaaaa.bbbbbb.ccccccccccccccccccccccccccccccccc"
    assert clean(lookalike) == [(lookalike, [])]


def test_several_secrets_are_named_in_order(clean):
    (text, fired), = clean("keys: AKIA4QWERTYZ7XK2MN3P then ghp_R8mZ1qkT4vXo2LbN7cYw3sHd9EaF0uJpQ6iG, "
                           "mail a@b.io, db postgres://u:pa55word99@h/x")
    assert text == "keys: <SECRET> then <SECRET>, mail <EMAIL>, db <URL>"
    assert fired == ["aws_access_key_id", "github_classic_token", "url_password", "url", "email"]  # secrets in the text's order


def test_generic_assignments_need_a_random_looking_value(clean):
    (text, fired), = clean("refresh_token: 7Hq2ZbK9mXv4NrT1wYc8LpDs and session_token = this_is_not_random_")
    assert text == "refresh_token: <SECRET> and session_token = this_is_not_random_"
    assert fired == ["generic_secret_assignment"]


def test_a_bad_rules_file_is_one_clear_line(tmp_path):
    path = tmp_path / "rules.yml"
    for content, message in [("- name: x\n  keywords: [a]\n", "needs name, keywords and pattern"),
                             ("- {name: Bad-Name, keywords: [a], pattern: a}\n", "lower_snake_case"),
                             ("- {name: x, keywords: [], pattern: a}\n", "keywords must be"),
                             ("- {name: x, keywords: [a], pattern: '(a)'}\n", "no capturing groups"),
                             ("- {name: x, keywords: [a], pattern: '[a'}\n", "not a valid pattern"),
                             ("- {name: x, keywords: [a], pattern: a, min_entropy: high}\n", "min_entropy must be"),
                             ("- [unclosed\n", "not valid YAML")]:
        path.write_text(content)
        secret_rules.cache_clear()
        with pytest.raises(BadInput, match=re.escape(message)):
            secret_rules(path)
    secret_rules.cache_clear()


def test_the_cache_fingerprint_follows_the_rules_the_library_and_the_region(monkeypatch):
    from lake import redaction, views
    from lake.sqlmodels import SqlModels

    base = views.fingerprint("US")
    assert views.fingerprint("DE") != base
    edited = [dict(rule) for rule in RULES]
    edited[0]["pattern"] += "x"
    models = SqlModels(views.MODELS.root, generated=redaction.secret_models(tuple(edited)))
    assert models.digest(views.FEATURE_SQL).digest() != views.MODELS.digest(views.FEATURE_SQL).digest()
    assert SqlModels(views.MODELS.root, generated=redaction.secret_models()).digest(views.FEATURE_SQL).digest() \
        == views.MODELS.digest(views.FEATURE_SQL).digest()
    monkeypatch.setattr(redaction.phonenumbers, "__version__", "0.0.1")
    assert views.fingerprint("US") != base


# -- phones: libphonenumber ----------------------------------------------------------------------------

PHONES = [
    "+1 (415) 555-0132", "415-555-0132", "(202) 456-1111", "202.456.1111", "+1-202-456-1111",  # US
    "+44 20 7946 0958", "+44 7911 123456", "0044 20 7946 0958",                                  # GB
    "+49 30 901820", "+49 (0)30 901820", "+49-89-636-48018", "0049 30 901820",                    # DE
    "+33 1 42 68 53 00", "+33 6 12 34 56 78",                                                     # FR
    "+91 98765 43210", "+91-22-2778-8000",                                                        # IN
    "+55 11 91234-5678", "+55 (21) 2222-3333",                                                    # BR
    "+81 3-1234-5678", "+81 90 1234 5678",                                                        # JP
    "+61 2 9876 5432", "+61 412 345 678",                                                         # AU
    "+86 10 6552 9988", "+86 138 0013 8000",                                                      # CN
    "+7 495 123-45-67", "+52 55 1234 5678", "+39 06 6988 3145", "+34 912 34 56 78",               # RU MX IT ES
    "+31 20 123 4567", "+27 21 123 4567", "+234 803 123 4567", "+82 2-312-3456",                  # NL ZA NG KR
]


@pytest.mark.parametrize("number", PHONES)
def test_phone_numbers_of_many_regions(clean, number):
    assert clean(f"reach me at {number} after six") == [("reach me at <PHONE> after six", ["phone"])]


LOOKALIKES = [
    "on 2024-01-15 at 12:30:45", "released 15.01.2024", "v1.2.3 and 10.0.19041.1", "pi is 3.14159265",
    "it costs 10 000 000 dollars", "order 1234567 shipped", "uuid 550e8400-e29b-41d4-a716-446655440000",
    "commit 4f2a9c0b7d41e8a6b5c3", "ISBN 978-3-16-148410-0", "between 1999 and 2024 (25 years)",
    "coordinates 52.5200, 13.4050", "tracking 1Z999AA10123456784", "call 555-123-4567 (a fictional exchange)",
    "invoice 2024/000123/17",
]


@pytest.mark.parametrize("text", LOOKALIKES)
def test_phone_lookalikes_survive(clean, text):
    assert clean(text) == [(text, [])]


def test_two_numbers_in_one_run_and_a_number_run_into_a_figure(clean):
    (text, fired), = clean("lines +49 30 901820 / +49 30 901821 and room 12 +44 20 7946 0958 3 people")
    assert text == "lines <PHONE> / <PHONE> and room 12 <PHONE> 3 people" and fired == ["phone"] * 3


def test_the_default_region_reads_national_numbers():
    german = "ruf an: 030 901820 oder 089 63648018"
    assert _cleaner("DE")(german) == [("ruf an: <PHONE> oder <PHONE>", ["phone", "phone"])]
    assert _cleaner("US")(german) == [(german, [])]  # without a country code they are not US numbers


def test_the_region_is_checked(home):
    home.config_path.write_text("redaction:\n  phone_region: XX\n")
    with pytest.raises(BadInput, match="phone_region"):
        connect(home)


# -- IBANs and social security numbers -----------------------------------------------------------------


@pytest.mark.parametrize("iban", ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
                                  "FR14 2004 1010 0505 0001 3M02 606", "NL91ABNA0417164300"])
def test_ibans_with_a_valid_checksum(clean, iban):
    assert clean(f"pay to {iban} today") == [("pay to <IBAN> today", ["iban"])]


@pytest.mark.parametrize("text", ["pay to DE89 3704 0044 0532 0130 02 today", "part GB12 ABCD 1234 1234 1234 12",
                                  "model XY12 3456 7890 1234"])
def test_iban_lookalikes_survive(clean, text):
    assert clean(text) == [(text, [])]


def test_ssns_near_their_words(clean):
    assert clean("my SSN is 123-45-6789", "Social Security number: 078 05 1120") == [
        ("my SSN is <SSN>", ["ssn"]), ("Social Security number: <SSN>", ["ssn"])]


@pytest.mark.parametrize("text", ["part 123-45-6789 in stock", "ssn 000-12-3456 is never issued",
                                  "SSN 666-12-3456", "ssn 123-00-4567",
                                  "my SSN is on file; the part number is 123-45-6789"])
def test_ssn_lookalikes_survive(clean, text):
    assert clean(text) == [(text, [])]


# -- which rule fired, and the counts per rule ---------------------------------------------------------


def test_which_rule_fired_on_a_message_and_the_counts_per_rule(home):
    t0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
    texts = ["my key glpat-x9Kq2mZ7vB4nR1tY8wLc and mail me at a@b.io",
             "and ghp_R8mZ1qkT4vXo2LbN7cYw3sHd9EaF0uJpQ6iG plus glpat-Zr8VxQ2mTn5bK7wYc1Lp",
             "nothing here"]
    EventStore(home).append(events_to_table([
        MessageLogged(conversation_id="c", turn_index=i, role="user", content=t, occurred_at=t0, ingested_at=t0)
        for i, t in enumerate(texts)]))
    con = connect(home)
    assert con.execute("SELECT message_id, content, redaction_rules FROM clean_messages ORDER BY turn_index").fetchall() == [
        ("c/0", "my key <SECRET> and mail me at <EMAIL>", ["gitlab_personal_token", "email"]),
        ("c/1", "and <SECRET> plus <SECRET>", ["github_classic_token", "gitlab_personal_token"]),
        ("c/2", "nothing here", [])]
    rows = {r[1]: (r[0], *r[2:]) for r in con.execute("SELECT * FROM stats_redactions").fetchall()}
    assert rows["gitlab_personal_token"] == ("secret", 2, 2, 2 / 3)
    assert rows["github_classic_token"] == ("secret", 1, 1, 1 / 3) and rows["email"] == ("email", 1, 1, 1 / 3)
    assert len(rows) == len(RULES) + 7 and rows["slack_bot_token"] == ("secret", 0, 0, 0)
    stats = con.sql("SELECT secrets, emails, redacted_messages FROM stats").fetchall()
    assert stats == [(3, 1, 2)]
