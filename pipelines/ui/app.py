"""The Streamlit script behind ``chatlake ui``: six pages laid out over ``pipelines.ui.data``.

A thin layer, like ``cli.py``: it lays out what the library returns and calls the library's actions; every
number and every change comes from ``data``. Anything that goes wrong on a page is shown as one line
(``schemas.errors.one_line``, the CLI's words) in place of that page's part, and the rest keeps working.

Streamlit runs this file top to bottom on every interaction. The home comes from ``CHATLAKE_HOME`` (``chatlake
ui`` sets it); ``CHATLAKE_UI_TOKEN``, when set, must be given (``?token=`` in the address, or typed in) before
anything else runs, so no page and no action answers without it. ``?page=Models`` opens a page directly.
"""

from __future__ import annotations

import hmac
import os
from contextlib import contextmanager

import altair as alt
import pandas as pd
import streamlit as st

from lake.home import Home
from pipelines.ui import data
from pipelines.watch.status import status as watch_status
from schemas.errors import one_line

PAGES = ("Overview", "Conversations", "Snapshots", "Models", "Watcher", "SQL")
TOKEN_ENV = "CHATLAKE_UI_TOKEN"
SPLITS = ("train", "validation", "test")


@contextmanager
def shown_as_one_line():
    """Run a part of a page; if it fails, say why in one line and carry on with the rest."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 (the page must keep working: every failure becomes its line)
        st.error(one_line(exc), icon="⚠️")


@st.cache_resource(show_spinner="Opening the lake ...")
def open_lake(root: str) -> data.Lake:
    return data.Lake(root)


def done(message: str) -> None:
    """After an action: say so, and run the page again so everything on it shows the new state."""
    st.session_state["notice"] = message
    st.rerun()


def frame(rows) -> pd.DataFrame:
    return rows.to_pandas() if hasattr(rows, "to_pandas") else pd.DataFrame(rows)


def chart(df: pd.DataFrame, x: str, kind: str, *, y: str = "value", color: str = "series") -> alt.Chart:
    """A Vega-Lite plot of long-form rows: a line per series over days, or grouped bars."""
    if kind == "line":
        return alt.Chart(df).mark_line(point=True).encode(
            x=alt.X(f"{x}:T", title=x), y=alt.Y(f"{y}:Q", title=y), color=f"{color}:N", tooltip=list(df.columns))
    return alt.Chart(df).mark_bar().encode(
        x=alt.X(f"{x}:N", title=x, sort=None), xOffset=f"{color}:N", y=alt.Y(f"{y}:Q", title=y),
        color=f"{color}:N", tooltip=list(df.columns))


def authorized() -> bool:
    """With a token set, nothing runs until this session has shown it."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return True
    given = st.session_state.get("token") or st.query_params.get("token") or ""
    if hmac.compare_digest(given.encode(), token.encode()):
        st.session_state["token"] = given
        return True
    st.title("chatlake")
    entered = st.text_input("Access token", type="password", key="token_input")
    if entered:
        if hmac.compare_digest(entered.encode(), token.encode()):
            st.session_state["token"] = entered
            st.rerun()
        st.error("wrong token")
    return False


# -- pages ---------------------------------------------------------------------------------------------------


def overview(lake: data.Lake) -> None:
    st.header("Overview")
    with shown_as_one_line():
        s = lake.stats()
        cols = st.columns(6)
        for col, (label, key, rate) in zip(cols, (
                ("conversations", "conversations", False), ("messages", "messages", False),
                ("kept", "kept_rate", True), ("rated", "feedback_rate", True),
                ("duplicates", "duplicate_rate", True), ("quality dropped", "quality_drop_rate", True))):
            value = s.get(key)
            col.metric(label, "-" if value is None else f"{value:.1%}" if rate else f"{value:,}")
    for left, right in zip(data.CHARTS[::2], data.CHARTS[1::2] + (None,)):
        columns = st.columns(2)
        for column, spec in zip(columns, (left, right)):
            if spec is None:
                continue
            with column, shown_as_one_line():
                st.subheader(spec.title)
                df = frame(lake.chart(spec))
                if df.empty:
                    st.caption("nothing yet")
                else:
                    st.altair_chart(chart(df, spec.x, spec.kind), width="stretch")
                with st.expander("SQL"):
                    st.code(spec.sql, language="sql")


def conversations(lake: data.Lake) -> None:
    st.header("Conversations")
    options: dict = {}
    with shown_as_one_line():
        options = lake.filters()
    top = st.columns([3, 1])
    text = top[0].text_input("Search the text", key="search", placeholder="words in any message")
    raw = top[1].toggle("Raw text (unredacted)", key="raw", value=False,
                        help="Off: the text as clean_messages has it, PII and secrets replaced by placeholders.")
    cols = st.columns(6)
    chosen = {}
    for col, name in zip(cols, ("model", "source", "tag", "feedback", "flag")):
        label = "quality flag" if name == "flag" else name
        values = (["passed"] if name == "flag" else []) + options.get(name, [])
        chosen[name] = col.selectbox(label, [None] + values, key=f"filter_{name}",
                                     format_func=lambda v: "any" if v is None else v)
    chosen["split"] = cols[5].selectbox("split (newest snapshot)", [None, *SPLITS], key="filter_split",
                                        format_func=lambda v: "any" if v is None else v)
    found = None
    with shown_as_one_line():
        found = frame(lake.search(text, raw=raw, **chosen))
        st.caption(f"{len(found)} conversation(s)" + (f" (the newest {data.LIMIT})" if len(found) >= data.LIMIT else ""))
        st.dataframe(found, hide_index=True, key="results")
    if found is None or found.empty:
        return
    picked = st.selectbox("Open a conversation", list(found["conversation_id"]), key="open")
    if picked:
        with shown_as_one_line():
            read(lake, picked, raw)


def read(lake: data.Lake, conversation_id: str, raw: bool) -> None:
    """One conversation as a chat, and its curation: feedback and tags, written as events."""
    messages = lake.conversation(conversation_id, raw=raw)
    st.subheader(conversation_id)
    for m in messages:
        role = m["role"]
        with st.chat_message(role, avatar={"tool": "🔧", "system": "⚙️"}.get(role)):
            head = " · ".join(str(v) for v in (role, m["model"], m["occurred_at"]) if v)
            st.caption(head + (f" · 👍 {m['thumbs_up']}" if m["thumbs_up"] else "")
                       + (f" · 👎 {m['thumbs_down']}" if m["thumbs_down"] else ""))
            if m["reasoning"]:
                with st.expander("reasoning"):
                    st.text(m["reasoning"])
            if m["tool_name"]:
                st.caption(f"result of {m['tool_name']}")
            if m["content"]:
                st.markdown(m["content"]) if role == "assistant" else st.text(m["content"])
            if m["tool_calls"]:
                st.caption("tool calls")
                st.json(data.shown_calls(m["tool_calls"]))
            for comment in m["comments"] or []:
                st.caption(f"💬 {comment}")
    with st.form("feedback_form", clear_on_submit=True):
        st.markdown("**Feedback**")
        targets = [None] + [m["message_id"] for m in messages if m["role"] == "assistant"]
        target = st.selectbox("on", targets, key="feedback_target",
                              format_func=lambda v: "the whole conversation" if v is None else f"reply {v}")
        rating = st.radio("rating", ["none", "👍 up", "👎 down"], horizontal=True, key="feedback_rating")
        comment = st.text_input("comment", key="feedback_comment")
        if st.form_submit_button("Record feedback"):
            with shown_as_one_line():
                lake.feedback(conversation_id, message_id=target, comment=comment,
                              rating={"👍 up": 1, "👎 down": -1}.get(rating))
                done("feedback recorded")
    tag_cols = st.columns([2, 1, 1])
    tag = tag_cols[0].text_input("tag (letters, digits, . _ : -)", key="tag_name")
    if tag_cols[1].button("Add tag", key="tag_add") and tag:
        with shown_as_one_line():
            lake.tag(conversation_id, tag)
            done(f"tagged {tag}")
    if tag_cols[2].button("Remove tag", key="tag_remove") and tag:
        with shown_as_one_line():
            lake.tag(conversation_id, tag, removed=True)
            done(f"removed tag {tag}")


def snapshots(lake: data.Lake) -> None:
    st.header("Snapshots")
    rows = []
    with shown_as_one_line():
        rows = data.snapshots(lake.home)
        st.dataframe(frame(rows), hide_index=True, key="snapshot_list")
    if not rows:
        st.caption("no snapshot yet: chatlake snapshot create")
        return
    ids = [r["id"] for r in rows]
    picked = st.selectbox("Snapshot", ids, index=len(ids) - 1, key="snapshot")
    with shown_as_one_line():
        st.markdown("**Left out, and why**")
        st.dataframe(frame(data.drop_reasons(lake.home, picked)), hide_index=True, key="drop_reasons")
        hist = frame(data.token_histograms(lake.home, picked))
        if hist.empty:
            st.caption("no token histograms: the snapshot was cut without a tokenizer (--tokenizer)")
        else:
            st.markdown("**Tokens per example**")
            st.altair_chart(alt.Chart(hist).mark_bar().encode(
                x=alt.X("tokens:N", sort=alt.SortField("lo")), xOffset="split:N", y="count:Q", color="split:N",
                column="format:N", tooltip=list(hist.columns)))
    if len(ids) > 1:
        st.markdown("**Diff of two snapshots**")
        cols = st.columns(2)
        a = cols[0].selectbox("from", ids, index=len(ids) - 2, key="diff_a")
        b = cols[1].selectbox("to", ids, index=len(ids) - 1, key="diff_b")
        with shown_as_one_line():
            diff, changes = data.snapshot_diff(lake.home, a, b)
            st.dataframe(pd.DataFrame([{"split": s, "added": len(d.added), "removed": len(d.removed)}
                                       for s, d in diff.splits.items()]), hide_index=True, key="diff_summary")
            if diff.config_changed:
                st.caption("the selection config changed between them")
            st.dataframe(frame(changes), hide_index=True, key="diff_rows")


def models(lake: data.Lake) -> None:
    st.header("Models")
    names = []
    with shown_as_one_line():
        names = data.model_names(lake.home)
    if not names:
        st.caption("no model yet: chatlake train")
        return
    name = st.selectbox("Model", names, key="model")
    version_rows = []
    with shown_as_one_line():
        version_rows = data.versions(lake.home, name)
        st.subheader("Versions, aliases and lineage")
        st.dataframe(frame(version_rows), hide_index=True, key="versions")
    with shown_as_one_line():
        run_rows = data.runs(lake.home, name)
        if run_rows:
            st.subheader("Training runs")
            st.dataframe(frame([{k: v for k, v in r.items() if k != "details"} for r in run_rows]), hide_index=True)
            run_id = st.selectbox("Loss curve of run", [r["run_id"] for r in run_rows], index=len(run_rows) - 1,
                                  key="run")
            curve = frame(data.loss_curve(next(r for r in run_rows if r["run_id"] == run_id)))
            if curve.empty:
                st.caption("no training log for this run")
            else:
                st.altair_chart(alt.Chart(curve).mark_line(point=True).encode(
                    x="step:Q", y="loss:Q", color="series:N", tooltip=list(curve.columns)), width="stretch")
    with shown_as_one_line():
        evals = frame(data.evaluations(lake.home, name))
        if not evals.empty:
            st.subheader("Evaluations, metric by metric")
            side = evals.pivot_table(index=["snapshot", "split", "metric"], columns="version", values="value",
                                     aggfunc="last")
            st.dataframe(side, key="evaluations")
            title, replies = data.generated_replies(lake.home, name)
            if replies:
                st.subheader("Generated replies")
                st.caption(title)
                st.dataframe(frame(replies), hide_index=True, key="generated_replies")
    versions_numbers = [r["version"] for r in version_rows]
    if versions_numbers:
        st.subheader("Promote")
        version = st.selectbox("Version", versions_numbers, index=len(versions_numbers) - 1, key="promote_version")
        with shown_as_one_line():
            comparison = data.gate(lake.home, name, version)
            st.markdown(f"**The gate**: {'passes' if comparison.passed else 'refuses'}: {comparison.reason}")
            if comparison.metrics:
                st.dataframe(pd.DataFrame([{"metric": k, f"v{comparison.candidate}": c,
                                            comparison.reference_label: r} for k, (c, r) in comparison.metrics.items()]),
                             hide_index=True, key="gate")
        with st.form("promote_form"):
            why = st.text_input("Why (kept in the registry's history)", key="promote_why")
            force = st.checkbox("Force past the gate (recorded as forced)", key="promote_force")
            alias_only = st.checkbox("Move the production alias only; leave Ollama alone", key="promote_alias_only")
            if st.form_submit_button("Promote"):
                with shown_as_one_line():
                    result = data.promote_version(lake.home, name, version, why=why, force=force,
                                                  deploy=not alias_only)
                    done(f"{name} v{result.version} is production"
                               + (" (forced past the gate)" if result.forced else "")
                               + (f", replacing v{result.previous_version}" if result.previous_version else ""))
        with st.form("rollback_form"):
            why_back = st.text_input("Why roll back", key="rollback_why")
            alias_only_back = st.checkbox("Move the production alias only; leave Ollama alone", key="rollback_alias_only")
            if st.form_submit_button("Roll back"):
                with shown_as_one_line():
                    result = data.rollback_model(lake.home, name, why=why_back, deploy=not alias_only_back)
                    done(f"{name} v{result.version} is production again, replacing v{result.previous_version}")
    with shown_as_one_line():
        st.subheader("Promotions and rollbacks")
        st.dataframe(frame(data.promotions(lake.home, name)), hide_index=True, key="promotions")
        st.subheader("Deployments")
        st.dataframe(frame(data.deployments(lake.home, name)), hide_index=True, key="deployments")


def watcher(lake: data.Lake) -> None:
    st.header("Watcher")
    with shown_as_one_line():
        s = watch_status(lake.home)
        cols = st.columns(4)
        cols[0].metric("watcher", "running" if s["watcher"]["running"] else "not running")
        cols[1].metric("training", "stopped" if s["stopped"] else "allowed")
        cols[2].metric("failures in a row", s["consecutive_failures"])
        production = s["production"]
        cols[3].metric("production", f"{production['name']} v{production['version']}" if production else "-")
        if s["stopped_reason"]:
            st.warning(s["stopped_reason"])
        st.subheader("Run in progress")
        if s["run"]:
            st.json(s["run"])
        else:
            st.caption("none")
        st.subheader("Recent decisions")
        decisions = s["decisions"]
        if decisions:
            st.dataframe(frame(decisions), hide_index=True, key="decisions")
        else:
            st.caption("no decision yet: chatlake watch")
        if s["imports"]:
            st.subheader("Recent imports")
            st.dataframe(frame(s["imports"]), hide_index=True)


def sql(lake: data.Lake) -> None:
    st.header("SQL")
    query = st.text_area("DuckDB SQL over every view (as chatlake sql)", key="sql",
                         value="SELECT model, count(*) AS replies FROM messages WHERE role = 'assistant' GROUP BY ALL")
    st.button("Run", key="sql_run")  # a click reruns the page; the query runs on every run that has one
    if query.strip():
        with shown_as_one_line():
            table = lake.sql(query)
            st.caption(f"{table.num_rows} row(s)")
            st.dataframe(frame(table), hide_index=True, key="sql_result")
            cols = st.columns(2)
            cols[0].download_button("Download CSV", data.to_csv(table), "result.csv", "text/csv", key="csv")
            cols[1].download_button("Download Parquet", data.to_parquet(table), "result.parquet",
                                    "application/octet-stream", key="parquet")
    with st.expander("Views"):
        with shown_as_one_line():
            st.dataframe(frame(lake.arrow("SELECT view_name AS name FROM duckdb_views() WHERE NOT internal "
                                          "ORDER BY name")), hide_index=True)


RENDER = {"Overview": overview, "Conversations": conversations, "Snapshots": snapshots, "Models": models,
          "Watcher": watcher, "SQL": sql}


def main() -> None:
    st.set_page_config(page_title="chatlake", page_icon="🌊", layout="wide")
    if not authorized():
        return
    home = Home.resolve(None)
    try:
        lake = open_lake(str(home.root))
    except Exception as exc:  # noqa: BLE001
        st.error(one_line(exc), icon="⚠️")
        return
    wanted = st.query_params.get("page", PAGES[0])
    page = st.sidebar.radio("Page", PAGES, index=PAGES.index(wanted) if wanted in PAGES else 0, key="page")
    st.sidebar.caption(f"home {home.root}")
    st.sidebar.caption(f"lake version {lake.version}")
    if st.sidebar.button("Refresh", key="refresh", help="See what was written since the page opened"):
        with shown_as_one_line():
            lake.refresh()
            st.rerun()
    if "notice" in st.session_state:
        st.success(st.session_state.pop("notice"))
    RENDER[page](lake)


main()
