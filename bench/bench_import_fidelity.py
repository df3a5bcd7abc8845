"""Import fidelity: what chatlake keeps of files with tool turns, beside a plain reading of the same files.

    .venv/bin/python bench/bench_import_fidelity.py
    .venv/bin/python bench/bench_import_fidelity.py --chatgpt ~/export/conversations.json --openai train.jsonl

For each kind of file (openai, sharegpt, chatgpt, openwebui) it takes a sample with tool turns, shaped as its
producer writes it (``tests/data/tool_turns/``, or a file of your own), imports it with chatlake into a
temporary home and counts, from the lake (``lake.connect``), conversations, messages per role and tool calls.
The reference counts the same things with a reading of the JSON written here, apart from chatlake's code:
a few lines per format that follow the format's own rules (the branch an export shows, the speakers of
LLaMA-Factory, the turns a tool-using Open WebUI reply holds). Both are printed side by side, with whether they
agree; the exit status is 1 when any kind disagrees. Records chatlake quarantined are listed with their
reason (the reference counts every record, so a quarantined one shows as a disagreement).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lake import connect  # noqa: E402
from lake.ingest import ingest_files  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "tool_turns"
DEFAULTS = {"openai": SAMPLES / "openai-tools.jsonl", "sharegpt": SAMPLES / "sharegpt-glaive-tools.json",
            "chatgpt": SAMPLES / "chatgpt-code-interpreter.json", "openwebui": SAMPLES / "openwebui-export.json"}
ROLES = ("system", "user", "assistant", "tool")


def tally(conversations: int, roles: Counter, calls: int) -> dict:
    return {"conversations": conversations, **{r: roles.get(r, 0) for r in ROLES}, "tool calls": calls}


# -- the plain readings ------------------------------------------------------------------------------------
def read_openai(path: Path) -> dict:
    roles, calls, conversations = Counter(), 0, 0
    records = json.loads(path.read_text()) if path.read_text().lstrip().startswith("[") else \
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for record in records:
        conversations += 1
        for m in record["messages"]:
            roles[{"developer": "system", "function": "tool"}.get(m["role"], m["role"])] += 1
            calls += len(m.get("tool_calls") or []) + (1 if m.get("function_call") else 0)
    return tally(conversations, roles, calls)


def read_sharegpt(path: Path) -> dict:
    speakers = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                "observation": "tool", "tool": "tool", "function": "tool"}
    roles, calls, conversations = Counter(), 0, 0
    records = json.loads(path.read_text()) if path.read_text().lstrip().startswith("[") else \
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for record in records:
        conversations += 1
        roles["system"] += 1 if record.get("system") else 0
        previous = None
        for turn in record["conversations"]:
            if turn["from"] == "function_call":
                called = json.loads(turn["value"])
                calls += len(called) if isinstance(called, list) else 1
                if previous != "function_call":  # calls in a row are one turn of the assistant
                    roles["assistant"] += 1
            else:
                roles[speakers[turn["from"].lower()]] += 1
            previous = turn["from"]
    return tally(conversations, roles, calls)


def read_chatgpt(path: Path) -> dict:
    roles, calls = Counter(), 0
    conversations = json.loads(path.read_text())
    for conversation in conversations:
        mapping, node_id, shown = conversation["mapping"], conversation["current_node"], []
        while node_id:  # the branch the export shows: the current node up to the root
            shown.append(mapping[node_id])
            node_id = mapping[node_id].get("parent")
        thinking = False
        for node in reversed(shown):
            message = node.get("message")
            if not message or (message.get("metadata") or {}).get("is_visually_hidden_from_conversation"):
                continue
            role, content = message["author"]["role"], message.get("content") or {}
            kind = content.get("content_type")
            if kind in ("thoughts", "reasoning_recap"):
                thinking = True
                continue
            parts = content.get("parts") or []
            has_text = any(isinstance(p, str) and p.strip() for p in parts) or bool((content.get("text") or "").strip()) \
                or bool((content.get("result") or "").strip())
            has_files = any(isinstance(p, dict) and p.get("asset_pointer") for p in parts) or kind == "tether_quote" \
                or bool((message.get("metadata") or {}).get("attachments"))
            if role == "assistant" and message.get("recipient") not in (None, "all"):
                calls += 1
            elif not (has_text or has_files or kind == "execution_output"):
                continue
            if thinking and role != "assistant":
                roles["assistant"] += 1  # thoughts no reply followed
            thinking = False
            roles[role] += 1
        roles["assistant"] += 1 if thinking else 0
    return tally(len(conversations), roles, calls)


def _reply_turns(pieces: list[str]) -> tuple[int, int]:
    """(assistant turns, tool results) of a reply's pieces: a result ends an assistant turn."""
    turns, results, open_turn = 0, 0, False
    for piece in pieces:
        if piece == "result":
            results += 1
            open_turn = False
        elif not open_turn:
            turns, open_turn = turns + 1, True
    return turns, results


def read_openwebui(path: Path) -> dict:
    roles, calls = Counter(), 0
    chats = json.loads(path.read_text())
    for chat in chats:
        history = chat["chat"].get("history") or {}
        if history.get("currentId"):
            shown, node_id = [], history["currentId"]
            while node_id:
                shown.append(history["messages"][node_id])
                node_id = history["messages"][node_id].get("parentId")
            shown.reverse()
        else:
            shown = chat["chat"]["messages"]
        for m in shown:
            if m["role"] != "assistant":
                roles[m["role"]] += 1
                continue
            if m.get("output"):
                kinds = {"function_call": "call", "function_call_output": "result", "message": "text",
                         "reasoning": "reasoning"}
                pieces = [kinds[i["type"]] for i in m["output"] if i["type"] in kinds]
            else:
                pieces = []
                for block in re.split(r"(<details type=\"(?:tool_calls|reasoning)\".*?</details>)", m["content"], flags=re.S):
                    if block.startswith('<details type="tool_calls"'):
                        pieces += ["call", "result"] if 'done="true"' in block and "result=" in block else ["call"]
                    elif block.startswith("<details"):
                        pieces.append("reasoning")
                    elif html.unescape(block).strip():
                        pieces.append("text")
            turns, results = _reply_turns(pieces)
            roles["assistant"] += turns
            roles["tool"] += results
            calls += pieces.count("call")
    return tally(len(chats), roles, calls)


READERS = {"openai": read_openai, "sharegpt": read_sharegpt, "chatgpt": read_chatgpt, "openwebui": read_openwebui}


# -- chatlake ----------------------------------------------------------------------------------------------
def chatlake_counts(home: Path, fmt: str) -> dict:
    con = connect(home)
    source = f"import:{fmt}"
    conversations, calls = con.execute(
        "SELECT count(DISTINCT conversation_id), coalesce(sum(len(tool_calls)), 0) FROM messages WHERE source = ?",
        [source]).fetchone()
    roles = Counter(dict(con.execute("SELECT role, count(*) FROM messages WHERE source = ? GROUP BY role",
                                     [source]).fetchall()))
    return tally(conversations, roles, int(calls))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for fmt, default in DEFAULTS.items():
        parser.add_argument(f"--{fmt}", type=Path, default=default, help=f"the {fmt} file (default: {default.name})")
    args = parser.parse_args(argv)

    start, agreed = time.perf_counter(), True
    with tempfile.TemporaryDirectory(prefix="chatlake-fidelity-") as tmp:
        home = Path(tmp) / "home"
        for fmt in DEFAULTS:
            path = getattr(args, fmt)
            [report] = ingest_files(home, [path], format=fmt)
            ours, reference = chatlake_counts(home, fmt), READERS[fmt](path)
            same = ours == reference
            agreed &= same
            print(f"{fmt} ({path.name}): {report.read} records, {report.quarantined} quarantined — "
                  f"{'agree' if same else 'DISAGREE'}")
            print(f"  {'':14s} {'chatlake':>9s} {'reference':>10s}")
            for key in ours:
                mark = "" if ours[key] == reference[key] else "   <- differs"
                print(f"  {key:14s} {ours[key]:9d} {reference[key]:10d}{mark}")
            for where, reason in connect(home).execute(
                    "SELECT location, reason FROM quarantine WHERE source = ? ORDER BY location", [f"import:{fmt}"]).fetchall():
                print(f"  quarantined {where}: {reason}")
    print(f"\n{'all four kinds agree' if agreed else 'the counts DISAGREE'} ({time.perf_counter() - start:.1f} s)")
    return 0 if agreed else 1


if __name__ == "__main__":
    sys.exit(main())
