"""The dashboard's pages, driven by Streamlit's AppTest over a small real home (tests/helpers/dashboard.py):
every page renders, the plots get the lake's numbers, curation lands as events, promote refuses as the gate
and the CLI do, errors are one line and the page keeps working, and a token guards everything."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest

pytest.importorskip("streamlit", reason="the ui extra is not installed: pip install 'chatlake[ui]'")

from streamlit.testing.v1 import AppTest  # noqa: E402

from pipelines.connect import connect  # noqa: E402
from pipelines.ui import app as app_module  # noqa: E402
from pipelines.ui.data import CHARTS, Lake  # noqa: E402
from registry.models import query  # noqa: E402
from schemas.errors import BadInput  # noqa: E402
from tests.helpers.dashboard import EMAIL  # noqa: E402

APP = app_module.__file__


def page(name: str, **params) -> AppTest:
    """The app opened on ``name`` (as ``?page=name``), run once."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["page"] = name
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def elements(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from elements(child)


def charts(at: AppTest) -> list[pa.Table]:
    """The data of every Vega-Lite chart on the page, as Arrow tables (Streamlit sends them as Arrow IPC)."""
    found = []
    for e in elements(at.main):
        if getattr(e, "type", None) == "vega_lite_chart":
            found.append(pa.concat_tables([pa.ipc.open_stream(d.data.data).read_all() for d in e.proto.datasets]))
    return found


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not errors(at), errors(at)
    return at


def test_every_page_renders_its_main_element(dashboard_home):
    home, built = dashboard_home
    overview = ok(page("Overview"))
    assert [m.label for m in overview.metric][:2] == ["conversations", "messages"]
    assert len(charts(overview)) == len(CHARTS)
    conversations = ok(page("Conversations"))
    assert conversations.dataframe[0].value.shape[0] == 21  # 12 + mail + tools + the copy + 6 later
    assert conversations.chat_message  # the first result opens as a chat
    splits = dict(zip(conversations.dataframe[0].value["conversation_id"], conversations.dataframe[0].value["split"]))
    assert pd.isna(splits["c00copy"]) and {splits["d00"], splits["c02"]} <= {"train", "validation", "test"}
    snapshots = ok(page("Snapshots"))
    assert list(snapshots.dataframe[0].value["id"]) == list(built["snapshots"])
    diff = snapshots.dataframe[2].value  # the diff of the two, per split
    assert diff["added"].sum() > 0 and diff["removed"].sum() == 0
    models = ok(page("Models"))
    assert list(models.dataframe[0].value["version"]) == built["versions"]
    assert "production" in list(models.dataframe[0].value["aliases"])[0]
    watcher = ok(page("Watcher"))
    assert [m.value for m in watcher.metric][3] == "tiny v1"
    sql = ok(page("SQL"))
    assert sql.dataframe[0].value.shape[0] >= 1


def test_the_plots_get_the_lakes_numbers_and_show_their_sql(dashboard_home):
    home, _ = dashboard_home
    at = ok(page("Overview"))
    by_title = dict(zip([s.value for s in at.subheader], charts(at)))
    con = connect(home)
    daily = by_title["Conversations and messages per day"].to_pylist()
    assert sum(r["value"] for r in daily if r["series"] == "messages") == \
        con.execute("SELECT count(*) FROM messages").fetchone()[0]
    by_model = {(r["model"], r["series"]): r["value"] for r in by_title["Replies and conversations by model"].to_pylist()}
    assert by_model[("qwen2.5", "replies")] == con.execute(
        "SELECT count(*) FROM messages WHERE model = 'qwen2.5' AND role = 'assistant'").fetchone()[0]
    removed = {r["reason"]: r["value"] for r in by_title[
        "Why conversations are left out: quality reasons and duplicates"].to_pylist()}
    assert removed["exact duplicate"] == 1 and removed["negative_feedback"] == 1
    redactions = {(r["type"], r["series"]): r["value"] for r in by_title["Redactions by type"].to_pylist()}
    assert redactions[("email", "redactions")] == 2  # one in a message's text, one in a reply's reasoning
    tools = by_title["Tool use per day"].to_pylist()
    assert {s: sum(r["value"] for r in tools if r["series"] == s) for s in ("tool_calls", "tool_results")} == \
        {"tool_calls": 1, "tool_results": 1}
    assert all("FROM" in c.value for c in at.code)  # each plot's SQL, one click away


def test_search_filters_and_the_raw_text_only_behind_the_toggle(dashboard_home):
    home, built = dashboard_home
    at = ok(page("Conversations"))
    at.text_input(key="search").set_value("lisbon trip").run()
    assert list(ok(at).dataframe[0].value["conversation_id"]) == ["mail"]
    text = " ".join(t.value for t in at.text)
    assert built["email"] not in text and "<EMAIL>" in text.upper()
    at.toggle(key="raw").set_value(True).run()
    assert built["email"] in " ".join(t.value for t in ok(at).text)

    at.text_input(key="search").set_value("").run()
    at.selectbox(key="filter_model").set_value("qwen2.5").run()
    found = ok(at).dataframe[0].value
    assert "tools" in set(found["conversation_id"]) and all("qwen2.5" in list(m) for m in found["models"])
    at.selectbox(key="filter_model").set_value(None)
    at.selectbox(key="filter_flag").set_value("negative_feedback").run()
    assert list(ok(at).dataframe[0].value["conversation_id"]) == ["c01"]
    at.selectbox(key="filter_flag").set_value(None)
    at.selectbox(key="filter_split").set_value("test").run()
    in_test = set(ok(at).dataframe[0].value["conversation_id"])
    index = connect(home).execute(
        "SELECT conversation_id FROM read_parquet(?) WHERE split = 'test'",
        [str(home.snapshots_dir / "april" / "conversations.parquet")]).fetchall()
    assert in_test == {r[0] for r in index}


def test_a_tool_call_and_the_reasoning_read_as_a_chat(dashboard_home):
    at = ok(page("Conversations"))
    at.text_input(key="search").set_value("weather").run()
    ok(at)
    assert [m.name for m in at.chat_message] == ["user", "assistant", "tool", "assistant"]
    assert [json.loads(j.value) for j in at.json] == [[{"id": "call_1", "name": "weather", "arguments": {"city": "Lisbon"}}]]
    texts = " ".join(t.value for t in at.text)
    assert "call the tool first" in texts and "<EMAIL>" in texts and EMAIL not in texts  # reasoning, redacted
    at.toggle(key="raw").set_value(True).run()
    assert EMAIL in " ".join(t.value for t in ok(at).text)  # as written, only behind the toggle


def test_feedback_and_tags_from_the_page_land_as_events(dashboard_home):
    home, _ = dashboard_home
    at = ok(page("Conversations"))
    at.text_input(key="search").set_value("lisbon trip").run()
    at.selectbox(key="feedback_target").set_value("mail/1")
    at.radio(key="feedback_rating").set_value("👎 down")
    at.text_input(key="feedback_comment").set_value("too vague")
    at.button[0].click().run()  # the form's submit button
    assert "feedback recorded" in [s.value for s in ok(at).success]
    rows = connect(home).execute("SELECT message_id, rating, comment, source FROM feedback "
                                 "WHERE conversation_id = 'mail'").fetchall()
    assert rows == [("mail/1", -1, "too vague", "ui")]
    at.text_input(key="tag_name").set_value("travel")
    at.button(key="tag_add").click().run()
    assert [list(t) for t in ok(at).dataframe[0].value["tags"]] == [["travel"]]  # seen at once
    at.text_input(key="tag_name").set_value("bad tag!")
    at.button(key="tag_add").click().run()
    assert len(errors(at)) == 1 and "tag" in errors(at)[0] and "\n" not in errors(at)[0]
    assert connect(home).execute("SELECT tag FROM tags WHERE conversation_id = 'mail'").fetchall() == [("travel",)]


def test_promote_refuses_as_the_gate_and_the_cli_say(dashboard_home, chatlake):
    home, built = dashboard_home
    at = ok(page("Models"))
    at.selectbox(key="promote_version").set_value(built["versions"][1]).run()
    assert ok(at).markdown[0].value.startswith("**The gate**: refuses: v2 does not beat production v1")
    at.text_input(key="promote_why").set_value("looks better")
    at.checkbox(key="promote_alias_only").check()
    at.button[0].click().run()
    cli = chatlake("promote", "tiny", str(built["versions"][1]), "--why", "looks better", "--no-deploy")
    assert cli.code == 1
    assert errors(at) == [cli.err.strip().removeprefix("chatlake: error: ")]
    assert query(home, "SELECT version FROM model_aliases WHERE alias = 'production'") == [{"version": 1}]
    # A reason is required; forced past the gate it goes through, and rollback asks for a reason too.
    at.text_input(key="promote_why").set_value("")
    at.checkbox(key="promote_force").check()
    at.button[0].click().run()
    assert errors(at) == ["give a reason for the promotion: it is kept in the registry's history"]
    at.text_input(key="promote_why").set_value("hotfix")
    at.button[0].click().run()
    assert "tiny v2 is production (forced past the gate), replacing v1" in [s.value for s in ok(at).success]
    at.text_input(key="rollback_why").set_value("answers got worse")
    at.checkbox(key="rollback_alias_only").check()
    at.button[1].click().run()
    assert "tiny v1 is production again, replacing v2" in [s.value for s in ok(at).success]
    promotions = query(home, "SELECT action, forced, why FROM model_promotions ORDER BY occurred_at")
    assert [(p["action"], p["forced"], p["why"]) for p in promotions] == [
        ("promote", False, "first model"), ("promote", True, "hotfix"), ("rollback", False, "answers got worse")]


def test_models_page_shows_loss_curves_and_evaluations_side_by_side(dashboard_home):
    at = ok(page("Models"))
    curve = charts(at)[0].to_pylist()
    assert {r["series"] for r in curve} == {"train", "validation"} and len(curve) == 12
    side = at.dataframe[2].value  # evaluations: one column per version, one row per metric
    assert list(side.columns) == ["base", "v1", "v2"]
    assert side.loc[("1", "test", "perplexity")].tolist() == [12.0, 10.0, 11.0]


def test_models_page_shows_generated_replies_beside_the_reference_and_what_they_were_compared_with(dashboard_home):
    at = ok(page("Models"))
    replies = next(d.value for d in at.dataframe if "reference" in d.value.columns)
    assert list(replies.columns) == ["kind", "prompt", "reference", "v2", "base", "passed"]
    sample, probe = replies.to_dict("records")
    assert sample["prompt"] == "Where is the lighthouse?" and sample["reference"] == "On the north cape."
    assert (sample["v2"], sample["base"]) == ("reply of version 2", "reply of version 0")
    assert (probe["kind"], probe["v2"], probe["base"], probe["passed"]) == ("probe", "keeper 2", "keeper 0", True)
    assert "v2 on 1 (test) beside base" in [c.value for c in at.caption]


def test_a_busy_home_is_one_line_and_the_page_keeps_working(dashboard_home, chatlake):
    """Another process promoting the same model holds its promotion lock: the page says so in the CLI's words,
    changes nothing, and promotes once the other one has finished."""
    from lake.locks import file_lock

    home, built = dashboard_home
    at = ok(page("Models"))
    at.selectbox(key="promote_version").set_value(built["versions"][1]).run()
    at.text_input(key="promote_why").set_value("hotfix")
    at.checkbox(key="promote_force").check()
    at.checkbox(key="promote_alias_only").check()
    with file_lock(home.locks_dir / "promote-tiny.lock"):  # (a lock of its own: flock excludes other descriptors)
        at.button[0].click().run()
        cli = chatlake("promote", "tiny", str(built["versions"][1]), "--why", "hotfix", "--force", "--no-deploy")
    assert cli.code == 1 and "in progress" in cli.err
    assert errors(at) == [cli.err.strip().removeprefix("chatlake: error: ")] and not at.exception
    assert query(home, "SELECT version FROM model_aliases WHERE alias = 'production'") == [{"version": 1}]
    at.button[0].click().run()
    assert "tiny v2 is production (forced past the gate), replacing v1" in [s.value for s in ok(at).success]


def test_a_bad_query_is_one_line_and_the_page_keeps_working(dashboard_home, chatlake):
    home, _ = dashboard_home
    at = page("SQL")
    at.text_area(key="sql").set_value("SELECT nonsense FROM nowhere").run()
    cli = chatlake("sql", "SELECT nonsense FROM nowhere")
    assert errors(at) == [cli.err.splitlines()[0].removeprefix("chatlake: error: ")] and not at.exception
    at.text_area(key="sql").set_value("SELECT role, count(*) AS n FROM messages GROUP BY ALL ORDER BY role").run()
    table = ok(at).dataframe[0].value
    assert dict(zip(table["role"], table["n"])) == dict(connect(home).execute(
        "SELECT role, count(*) FROM messages GROUP BY ALL").fetchall())
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download Parquet"]


def test_new_data_shows_after_refresh(dashboard_home):
    home, _ = dashboard_home
    from lake.logger import ConversationLogger

    at = ok(page("Overview"))
    before = at.metric[0].value
    ConversationLogger(home).log_turn("late", user="A question asked after the page opened, with words.",
                                      assistant="And its answer, which the page sees after a refresh.")
    at.run()
    assert at.metric[0].value == before  # the state the page was opened on ...
    at.sidebar.button(key="refresh").click().run()
    assert int(ok(at).metric[0].value.replace(",", "")) == int(before.replace(",", "")) + 1  # ... until refresh


def test_a_missing_home_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATLAKE_HOME", str(tmp_path / "nowhere"))
    at = page("Overview")
    assert errors(at) == [f"no chatlake home at {tmp_path / 'nowhere'}: run chatlake init there, or pass --home"]
    assert not at.exception


def test_with_a_token_no_page_answers_without_it(dashboard_home, monkeypatch):
    monkeypatch.setenv("CHATLAKE_UI_TOKEN", "s3cret")
    for name in ("Overview", "Models", "SQL"):
        at = page(name)
        assert not at.sidebar.radio and not at.dataframe and not at.metric and not at.button
        assert [t.label for t in at.text_input] == ["Access token"]
    at = page("Overview", token="wrong")
    assert not at.metric
    at.text_input(key="token_input").set_value("nope").run()
    assert errors(at) == ["wrong token"] and not at.metric
    at.text_input(key="token_input").set_value("s3cret").run()
    assert ok(at).metric
    assert ok(page("Models", token="s3cret")).dataframe


def test_lake_reads_through_the_sql_connection(dashboard_home):
    home, _ = dashboard_home
    lake = Lake(home)
    assert lake.stats()["conversations"] == connect(home).execute("SELECT count(*) FROM conversations").fetchone()[0]
    assert lake.version == connect(home).execute("SELECT lake_version()").fetchone()[0]


def test_snapshots_page_plots_the_token_histograms_of_a_snapshot_cut_with_a_tokenizer(dashboard_home, tiny_tokenizer):
    from pipelines.snapshot import create_snapshot
    from schemas.config import SnapshotConfig

    home, _ = dashboard_home
    manifest = create_snapshot(home, SnapshotConfig(formats=["messages"]), name="tokens", tokenizer=str(tiny_tokenizer))
    at = ok(page("Snapshots"))
    assert at.selectbox(key="snapshot").value == manifest.id  # the newest is shown first
    plotted = charts(at)[0].to_pylist()
    expected = [(split, b.count) for split, summary in manifest.splits.items()
                for b in (summary.tokens["messages"].histogram if "messages" in summary.tokens else [])]
    assert sorted((r["split"], r["count"]) for r in plotted) == sorted(expected) and expected


def test_the_sql_page_runs_queries_only_and_leaves_the_shared_connection_alone(dashboard_home):
    at = page("SQL")
    for statement in ("DROP VIEW messages", "SELECT 1; DROP VIEW messages", "CREATE TABLE x AS SELECT 1"):
        at.text_area(key="sql").set_value(statement).run()
        assert errors(at) == ["the SQL page runs one query (SELECT ...); use chatlake sql for anything else"]
    with pytest.raises(BadInput, match="the query is empty"):
        Lake(dashboard_home[0]).sql("  -- nothing")
    at.text_area(key="sql").set_value("SELECT count(*) AS n FROM messages").run()
    assert ok(at).dataframe[0].value["n"][0] > 0
