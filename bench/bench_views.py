"""Benchmark: cleaned + deduplicated + quality-filtered messages and every stats view over a synthetic lake,
against a plain-Python loop doing the same redaction, filtering and hashing, measured in the same run.

    .venv/bin/python bench/bench_views.py --messages 1000000

What it prints, each figure beside its reference, in wall-clock and CPU seconds (CPU: the whole process,
so DuckDB's threads count; on a shared machine the wall times also measure the neighbours):

* cold: a lake with no feature cache: the cache built (every data file cleaned, hashed and shingled, and
  its per-conversation partial aggregates taken), connect, ``materialize`` the intermediate views, read the kept cleaned messages and every stats view;
* warm: the same with the cache up to date;
* incremental: ``--increment`` more messages appended as a new data file; the feature build touches only
  that file, so its cost is compared per message with the cold build; conversation_features merges the
  cached partials (about one row per conversation and file), so what still grows with the lake is reading
  the cache, the messages view and the set-wide steps;
* the reference: a plain-Python loop (the same patterns, read from the SQL macros and the secret rules table,
  without prefilters but each rule's keywords, phone numbers validated by the same phonenumbers function; the
  same quality rules; exact conversation and turn dedup; the stats views' counts by day, model, source and
  user, lengths, redactions and quality reasons) on the first ``--python-messages`` messages, its time
  scaled to the lake's size (it is too slow to run on a million). It does not do the MinHash near-duplicate
  step, which the SQL does on top. A parity check compares its cleaned texts and quality reasons with the
  SQL's;
* the note that naive SQL is not automatically fast: the same feature SQL with every prefilter turned off
  (all hint macros match everything, so each regex runs on every message and whitespace is split by regex)
  on the reference's messages, beside the prefiltered SQL and Python.

Synthetic data (``synthetic_messages``): realistic lengths, 10% of messages with PII or a secret, 5% of
conversations exact copies of earlier ones (1% near copies), generated as Arrow and appended with
``EventStore.append`` in batches of 100k messages (one data file each).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: python bench/bench_views.py

from lake import EventStore, connect  # noqa: E402
from lake.home import Home  # noqa: E402
from lake.redaction import (DEFAULT_PLACEHOLDER, TAG_CLOSE, TAG_OPEN, numbers_in, python_regex, rule_regex,  # noqa: E402
                            secret_rules)
from lake.views import apply_feature_sql, materialize, refresh_cache  # noqa: E402
from lake.views import MODELS as SQL_MODELS  # noqa: E402
from schemas.events import columns_to_table  # noqa: E402

FUNCTION_WORDS = ("the of and to a in is that for it you with as on be this are can or by your an if "
                  "not at from will use have more which one we all but has so I do these it's here").split()
MODELS = ["llama3.2", "qwen2.5:7b", "gemma2:9b", "mistral:7b"]
SOURCES = ["logger", "proxy", "import:sharegpt", "import:openai"]
PII_KINDS = ["email", "phone", "url", "ip", "card", "secret"]
REFUSALS = ["I'm sorry, but I can't help with that.", "As an AI language model, I cannot do that.",
            "I cannot assist with that request."]
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def synthetic_messages(n: int, *, seed: int = 0, id_prefix: str = "syn") -> pa.Table:
    """``n`` message events (plus thumbs feedback on 5% of replies) as a lake-shaped table.

    Conversations of 2-20 messages (10% open with a system prompt); user turns ~14 words, replies ~90
    (lognormal); a Zipf vocabulary with punctuation, numbers and paragraph breaks; 10% of messages carry
    PII or a secret; 5% of conversations are exact copies of earlier ones and 1% near copies; a few
    refusals, repetitive loops, noise and messy whitespace.
    """
    rng = np.random.default_rng(seed)
    py = random.Random(seed)
    sizes = 2 * np.minimum(rng.geometric(0.33, n // 2 + 1), 10)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    sizes[-1] -= int(sizes.sum()) - n
    sizes = sizes[sizes > 0]
    n_conv = len(sizes)
    conv_of = np.repeat(np.arange(n_conv), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    turn = np.arange(n) - starts[conv_of]
    role = np.where(turn % 2 == 0, "user", "assistant").astype(object)
    has_system = rng.random(n_conv) < 0.1
    role[starts[has_system]] = "system"
    words = np.where(role == "assistant", rng.lognormal(np.log(90), 0.8, n), rng.lognormal(np.log(14), 1.0, n))
    words = np.clip(words, 1, 3000).astype(np.int64)
    content = _texts(rng, _vocabulary(rng), words).to_pylist()

    # the messy 10% + 1% + ...: distinct slices of one permutation
    perm = rng.permutation(n)
    pii, refusal, noise, loops, messy = np.split(perm, np.cumsum([int(n * f) for f in (0.10, 0.01, 0.005, 0.005, 0.02)]))[:5]
    for i in pii:
        w = content[i].split(" ")
        pos = py.randint(0, len(w))
        content[i] = " ".join(w[:pos] + [_pii(py, py.choice(PII_KINDS))] + w[pos:])
    for i in refusal:
        content[i] = py.choice(REFUSALS) + (" " + content[i] if py.random() < 0.5 else "")
    for i in noise:
        content[i] = "".join(py.choices("#$%&*+=<>|~^{}[]0123456789/\\", k=200))
    for i in loops:
        content[i] = " ".join(["the answer is the answer"] * 40)
    for i in messy:
        content[i] = content[i].replace(" ", "\u00a0", 3) + "  \r\n\r\n\r\n\t" + "\x00\x07end  "

    # duplicates: 5% of conversations copy an earlier one of the same size exactly, 1% with one word
    # changed per message
    same_size: dict[int, list[int]] = {}
    for c, size in enumerate(sizes.tolist()):
        same_size.setdefault(size, []).append(c)
    for k, c in enumerate(rng.permutation(np.arange(1, n_conv))[: int(n_conv * 0.06)].tolist()):
        earlier = same_size[int(sizes[c])]
        pos = bisect.bisect_left(earlier, c)
        if pos == 0:
            continue
        src = earlier[py.randrange(pos)]
        for t in range(sizes[c]):
            text = content[starts[src] + t]
            if k % 6 == 0:
                w = text.split(" ")
                w[py.randrange(len(w))] = "changed"
                text = " ".join(w)
            content[starts[c] + t] = text
            role[starts[c] + t] = role[starts[src] + t]

    conv_ids = np.char.add(f"{id_prefix}-c", np.arange(n_conv).astype(str))
    users = np.char.add("user", np.minimum(rng.zipf(1.5, n_conv), 3000).astype(str))
    conv_start = np.datetime64("2025-01-01T00:00:00", "s") + rng.integers(0, 30 * 86400, n_conv).astype("timedelta64[s]")
    model_of = np.array(MODELS)[rng.integers(0, len(MODELS), n_conv)]
    source_of = np.array(SOURCES)[rng.integers(0, len(SOURCES), n_conv)]
    occurred = (conv_start[conv_of] + (turn * 20).astype("timedelta64[s]")).astype("datetime64[us]")
    is_reply = role == "assistant"
    message_ids = np.char.add(np.char.add(conv_ids[conv_of], "/"), turn.astype(str))
    messages = columns_to_table({
        "event_id": np.char.add(f"{id_prefix}-m", np.arange(n).astype(str)),
        "event_type": pa.array(["message"] * n),
        "schema_version": pa.array(np.ones(n, np.int64)),
        "occurred_at": pa.array(occurred),
        "ingested_at": pa.array(occurred),
        "source": source_of[conv_of],
        "user_id": users[conv_of],
        "conversation_id": conv_ids[conv_of],
        "message_id": message_ids,
        "turn_index": turn,
        "role": pa.array(role.tolist(), pa.string()),
        "content": pa.array(content, pa.string()),
        "model": pa.array(np.where(is_reply, model_of[conv_of], None).tolist(), pa.string()),
        "completion_tokens": pa.array(np.where(is_reply, words, 0)),
    })
    rated = np.flatnonzero(is_reply & (rng.random(n) < 0.05))
    k = len(rated)
    feedback = columns_to_table({
        "event_id": np.char.add(f"{id_prefix}-f", np.arange(k).astype(str)),
        "event_type": pa.array(["feedback"] * k),
        "schema_version": pa.array(np.ones(k, np.int64)),
        "occurred_at": pa.array(occurred[rated] + np.timedelta64(5, "s")),
        "ingested_at": pa.array(occurred[rated] + np.timedelta64(5, "s")),
        "source": pa.array(["logger"] * k),
        "conversation_id": conv_ids[conv_of[rated]],
        "message_id": message_ids[rated],
        "rating": pa.array(np.where(rng.random(k) < 0.8, 1, -1)),
    }, length=k)
    return pa.concat_tables([messages, feedback])


def _vocabulary(rng: np.random.Generator, size: int = 30000) -> pa.Array:
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    freq = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0,
                     1.9, 1.5, 1.0, 0.8, 0.2, 0.15, 0.1, 0.07])
    lengths = np.clip(rng.poisson(5.5, size), 2, 16)
    chars = "".join(rng.choice(letters, int(lengths.sum()), p=freq / freq.sum()))
    ends = np.cumsum(lengths).tolist()
    words = [chars[e - ln:e] for e, ln in zip(ends, lengths.tolist())]
    for i in range(size):
        if i % 9 == 0:
            words[i] += ",..:?"[i % 5]
        if i % 31 == 3:
            words[i] = str(i * 7919 % 2100)
        elif i % 13 == 5:
            words[i] = words[i].capitalize()
        elif i % 97 == 7:
            words[i] = f"`{words[i]}()`"
    return pa.array(FUNCTION_WORDS + words)


def _texts(rng: np.random.Generator, vocab: pa.Array, words: np.ndarray) -> pa.Array:
    """Texts of the given word counts: Zipf-distributed words (s=1), a paragraph break every ~60 words."""
    total = int(words.sum())
    ranks = np.minimum(np.power(float(len(vocab)), rng.random(total)).astype(np.int64), len(vocab)) - 1
    tokens = pc.take(vocab, pa.array(ranks))
    tokens = pc.if_else(pa.array(rng.random(total) < 1 / 60), pc.binary_join_element_wise("\n\n", tokens, ""), tokens)
    offsets = pa.array(np.concatenate([[0], np.cumsum(words)]), pa.int64())
    joined = pc.binary_join(pa.LargeListArray.from_arrays(offsets, tokens), " ")
    return pc.utf8_trim_whitespace(pc.replace_substring(joined, " \n\n", "\n\n")).cast(pa.string())


def _luhn_complete(digits: list[int]) -> list[int]:
    total = sum((d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 == 0 else d for i, d in enumerate(reversed(digits)))
    return digits + [(10 - total % 10) % 10]


def _pii(rng: random.Random, kind: str) -> str:
    r = lambda n: "".join(rng.choices(ALNUM, k=n))  # noqa: E731
    d = lambda n: "".join(rng.choices("0123456789", k=n))  # noqa: E731
    if kind == "email":
        return f"{r(6).lower()}.{r(4).lower()}@{r(7).lower()}.com"
    if kind == "phone":
        return rng.choice([f"+1 ({d(3)}) {d(3)}-{d(4)}", f"{d(3)}-{d(3)}-{d(4)}", f"+44 20 {d(4)} {d(4)}"])
    if kind == "url":
        return f"https://www.{r(8).lower()}.org/docs/{r(5).lower()}?id={d(4)}"
    if kind == "ip":
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if kind == "card":
        digits = _luhn_complete([4] + rng.choices(range(10), k=14))
        if rng.random() < 0.4:
            digits[-1] = (digits[-1] + 1) % 10  # fails the Luhn check: must stay
        s = "".join(map(str, digits))
        return " ".join(s[i:i + 4] for i in range(0, 16, 4))
    return rng.choice([f"sk-proj-{r(40)}", f"ghp_{r(36)}", f"AKIA{r(16).upper()}", f"hf_{r(34)}",
                       f"xoxb-{d(12)}-{r(24)}", f"AIza{r(35)}", f"Authorization: Bearer {r(32)}",
                       f"eyJ{r(20)}.eyJ{r(30)}.{r(25)}", f"postgres://admin:{r(12)}@db.internal:5432/app",
                       f"-----BEGIN RSA PRIVATE KEY-----\n{r(64)}\n{r(64)}\n-----END RSA PRIVATE KEY-----"])


# ---------------------------------------------------------------------------------------------------------
# The reference: the same work as a plain-Python loop


class Reference:
    """Redaction, normalisation, hashing, quality rules, exact dedup and the stats views' numbers, one
    message at a time in Python. The redaction patterns are read from the SQL macros and lake/redaction's
    rules table (RE2 syntax that Python's ``re`` accepts once ``\\x{...}`` is spelled ``\\U...``); no prefilters,
    but a secret rule runs where its keywords are (that is what the rule says); phones by ``numbers_in``."""

    def __init__(self, home: Home):
        con = duckdb.connect()
        apply_feature_sql(con, names=SQL_MODELS.ordered(["macros"]))

        def pattern(macro: str) -> re.Pattern:
            text = con.execute(f"SELECT {macro}()").fetchone()[0]
            return re.compile(re.sub(r"\\x\{([0-9a-fA-F]+)\}", lambda m: "\\U%08x" % int(m.group(1), 16), text), re.ASCII)

        self.control, self.space, self.noise = pattern("re_control"), pattern("re_space"), pattern("re_noise_hint")
        self.rules = [(rule, re.compile(python_regex(rule_regex(rule)), re.ASCII)) for rule in secret_rules()]
        self.tag = re.compile(python_regex(con.execute("SELECT re_rule_tag()").fetchone()[0]), re.ASCII)
        self.replacements = [("url", pattern("re_url"), "<URL>", "<URL>"),
                             ("email", pattern("re_email"), "<EMAIL>", "<EMAIL>"),
                             ("ip", pattern("re_ip"), "<IP>", "<IP>")]
        self.iban, self.ssn, self.ssn_hint = pattern("re_iban"), pattern("re_ssn"), pattern("re_ssn_hint")
        self.ssn_never = re.compile(r"^(?:000|666|9\d\d)|^\d{3}[- ]00|0000$")
        self.card, self.phone = pattern("re_card"), pattern("re_phone")
        self.region = home.config.redaction.phone_region
        self.refusal, self.error = pattern("re_refusal"), pattern("re_error_reply")
        self.trailing = re.compile(r"[ \t]+\n")
        self.runs = re.compile(r"(?<=\S)(?:[ \t][ \t]+|\t)")  # the SQL's (\S)(...) -> '\1 ', as a lookbehind
        self.blanks = re.compile(r"\n\n\n+")
        self.quality = home.config.quality

    @staticmethod
    def luhn(candidate: str) -> bool:
        digits = [int(c) for c in reversed(candidate) if c.isdigit()]
        return sum(d if i % 2 == 0 else d * 2 // 10 + d * 2 % 10 for i, d in enumerate(digits)) % 10 == 0

    @staticmethod
    def entropy(value: str) -> float:
        counts = collections.Counter(value)
        return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())

    @staticmethod
    def iban_valid(candidate: str) -> bool:
        s = candidate.replace(" ", "")
        return 15 <= len(s) <= 34 and int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1

    def secrets(self, text: str) -> tuple[str, list[str]]:
        """Each rule of the table whose keyword the text holds, in order, leaving its tag; then the tags read
        and removed (as the SQL does)."""
        original = text
        for rule, rx in self.rules:
            if not any(k in original for k in rule["keywords"]):
                continue
            tag = TAG_OPEN + rule["name"] + TAG_CLOSE + rule.get("placeholder", DEFAULT_PLACEHOLDER)
            if "min_entropy" in rule:
                for value in [m.group(2) for m in rx.finditer(text)]:
                    if self.entropy(value) >= rule["min_entropy"]:
                        text = text.replace(value, tag)
            else:
                text = rx.sub(lambda m: m.group(1) + tag + m.group(3), text)
        return self.tag.sub("", text), self.tag.findall(text)

    def clean(self, text: str) -> tuple[str, dict[str, int]]:
        text = self.space.sub(" ", self.control.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))
        text, rules = self.secrets(text)
        counts = {"secret": len(rules)}
        for kind, rx, replacement, placeholder in self.replacements:
            before = text.count(placeholder)
            text = rx.sub(replacement, text)
            counts[kind] = text.count(placeholder) - before
        for kind, find, placeholder in (
                ("iban", lambda t: [c for c in self.iban.findall(t) if self.iban_valid(c)], "<IBAN>"),
                ("ssn", lambda t: [c for c in self.ssn.findall(t) if not self.ssn_never.search(c)]
                 if self.ssn_hint.search(t) else [], "<SSN>"),
                ("credit_card", lambda t: [c for c in self.card.findall(t) if self.luhn(c)], "<CREDIT_CARD>"),
                ("phone", lambda t: [n for c in self.phone.findall(t) if sum(ch.isdigit() for ch in c) >= 7
                                     for n in numbers_in(c, self.region)], "<PHONE>")):
            before = text.count(placeholder)
            for found in find(text):
                text = text.replace(found, placeholder)
            counts[kind] = text.count(placeholder) - before
        text = self.blanks.sub("\n\n", self.runs.sub(" ", self.trailing.sub("\n", text))).strip(" \t\n")
        return text, counts

    def run(self, table: pa.Table) -> dict:
        q = self.quality
        rows = table.to_pylist()
        thumbs: dict[str, list[int]] = {}
        conversations: dict[str, dict] = {}
        messages = []
        for r in rows:
            if r["event_type"] == "feedback":
                thumbs.setdefault(r["message_id"], []).append(r["rating"])
                continue
            text, counts = self.clean(r["content"])
            words = text.lower().split()
            shingles = list(zip(words, words[1:], words[2:])) if len(words) >= 3 else ([tuple(words)] if words else [])
            reply = r["role"] == "assistant"
            letters = (sum(1 for ch in text if ch.isalpha() or ch in " \t\n\f\r") if self.noise.search(r["content"])
                       else len(text))
            m = {**r, "text": text, "redactions": counts, "hash": hash(" ".join(words)), "chars": len(text),
                 "words": len(words), "letters": letters,
                 "repetition": 1 - len(set(shingles)) / len(shingles) if reply and shingles else None,
                 "refusal": reply and bool(self.refusal.match(text)), "error": reply and bool(self.error.match(text))}
            messages.append(m)
            conversations.setdefault(r["conversation_id"], {"messages": []})["messages"].append(m)
        for m in messages:
            ratings = thumbs.get(m["message_id"], [])
            m["up"], m["down"] = ratings.count(1), ratings.count(-1)

        # quality and exact dedup per conversation
        for c in conversations.values():
            ms = sorted(c["messages"], key=lambda m: (m["turn_index"], m["message_id"]))
            c.update(first_at=min(m["occurred_at"] for m in ms), user=ms[0]["user_id"],
                     chars=sum(m["chars"] for m in ms), hash=hash(tuple((m["role"], m["hash"]) for m in ms)),
                     feedback="negative" if any(m["down"] for m in ms) else "positive" if any(m["up"] for m in ms) else "none")
            replies = [m for m in ms if m["role"] == "assistant"]
            ratios = [m["letters"] / m["chars"] for m in ms if m["chars"] >= 20]
            flags = {"too_few_turns": len(ms) < q.min_turns, "too_many_turns": len(ms) > q.max_turns,
                     "too_short": c["chars"] < q.min_conversation_chars, "too_long": c["chars"] > q.max_conversation_chars,
                     "no_reply": not replies, "empty_reply": any(m["chars"] < q.min_assistant_chars for m in replies),
                     "repetitive": max([m["repetition"] or 0 for m in replies], default=0) > q.max_repetition_ratio,
                     "refusal": any(m["refusal"] for m in replies), "error_reply": any(m["error"] for m in replies),
                     "negative_feedback": c["feedback"] == "negative", "noise": bool(ratios) and min(ratios) < q.min_text_ratio}
            c["reasons"] = [k for k, v in flags.items() if v]
        first_of: dict[int, str] = {}
        for cid, c in sorted(conversations.items(), key=lambda kv: (kv[1]["first_at"], kv[0])):
            first = first_of.setdefault(c["hash"], cid)
            c["duplicate_of"] = first if first != cid else None
        turns = []
        for c in conversations.values():
            ms = sorted(c["messages"], key=lambda m: (m["turn_index"], m["message_id"]))
            turns += [(b["occurred_at"], b["message_id"], hash((a["hash"], b["hash"])))
                      for a, b in zip(ms, ms[1:]) if a["role"] == "user" and b["role"] == "assistant"]
        seen_turns: set[int] = set()
        duplicate_turns = 0
        for _, _, h in sorted(turns):
            duplicate_turns += h in seen_turns
            seen_turns.add(h)

        # the kept messages and the stats views' numbers
        dropped = {cid for cid, c in conversations.items() if c["reasons"] or c["duplicate_of"] is not None}
        redactions: collections.Counter = collections.Counter()
        for m in messages:
            redactions.update(m["redactions"])
        kept = [(m["conversation_id"], m["message_id"], m["turn_index"], m["role"], m["text"]) for m in messages
                if m["conversation_id"] not in dropped]
        stats = {"conversations": len(conversations), "messages": len(messages), "turns": len(turns),
                 "duplicate_turns": duplicate_turns,
                 "duplicates": sum(c["duplicate_of"] is not None for c in conversations.values()),
                 "quality_dropped": sum(bool(c["reasons"]) for c in conversations.values()),
                 "redactions": redactions,
                 "redacted_messages": sum(any(m["redactions"].values()) for m in messages),
                 "reasons": collections.Counter(r for c in conversations.values() for r in c["reasons"])}
        for key, name in (("day", "daily"), ("model", "by_model"), ("source", "by_source"), ("user_id", "by_user")):
            groups: dict = {}
            for m in messages:
                k = m["occurred_at"].date() if key == "day" else m[key]
                g = groups.setdefault(k, {"messages": 0, "conversations": set(), "users": set(), "chars": 0, "up": 0,
                                          "down": 0, "refusals": 0, "errors": 0, "redacted": 0})
                g["messages"] += 1
                g["conversations"].add(m["conversation_id"])
                g["users"].add(m["user_id"])
                g["chars"] += m["chars"]
                g["up"] += m["up"]
                g["down"] += m["down"]
                g["refusals"] += m["refusal"]
                g["errors"] += m["error"]
                g["redacted"] += any(m["redactions"].values())
            stats[name] = groups
        lengths = {}
        for role in ("user", "assistant", "system", None):
            chars = sorted(m["chars"] for m in messages if role is None or m["role"] == role)
            if chars:
                lengths[role or "all"] = {p: chars[min(len(chars) - 1, int(p * len(chars)))] for p in (0.1, 0.5, 0.9, 0.99)}
                lengths[role or "all"]["histogram"] = collections.Counter(
                    min(4 ** max(0, math.ceil(math.log(max(c, 1), 4))), 1048576) for c in chars)
        stats["lengths"] = lengths
        return {"kept": kept, "stats": stats, "conversations": conversations, "messages": messages}


# ---------------------------------------------------------------------------------------------------------
# The measurements

STATS_VIEWS = ("stats", "stats_daily", "stats_by_model", "stats_by_source", "stats_by_user", "stats_lengths",
               "stats_redactions", "stats_quality")
KEPT_SQL = """
SELECT m.conversation_id, m.message_id, m.turn_index, m.role, m.content
FROM clean_messages m
JOIN quality q USING (conversation_id)
JOIN conversation_dedup d USING (conversation_id)
WHERE q.passed AND NOT d.is_duplicate
"""
# The naive port: the same feature SQL with every prefilter matching everything (each regex runs on every
# message, whitespace is normalised by regex).
NAIVE_HINTS = ("re_work", "re_characters_hint", "re_layout_hint", "re_secret_hint", "re_url_hint", "re_email_hint",
               "re_ip_hint", "re_iban_hint", "re_digits_hint")


class Clock:
    """Wall and CPU seconds (CPU: this process, every thread, so DuckDB's too) of the blocks it times."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.kept = 0

    @contextlib.contextmanager
    def __call__(self, name: str):
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu

    def total(self) -> tuple[float, float]:
        return sum(self.wall.values()), sum(self.cpu.values())


def sql_pass(home: Home, store: EventStore, cold: bool = False) -> Clock:
    """The feature cache brought up to date (``cold``: from nothing), then connect, materialize, the kept
    messages and every stats view."""
    if cold:
        shutil.rmtree(home.cache_dir, ignore_errors=True)
    clock = Clock()
    with clock("features"):
        refresh_cache(home, store.files())
    with clock("connect"):
        con = connect(home)
    with clock("materialize"):
        materialize(con)
    with clock("queries"):
        kept = con.sql(KEPT_SQL).to_arrow_table()
        for view in STATS_VIEWS:
            con.sql(f"SELECT * FROM {view}").to_arrow_table()
    con.close()
    clock.kept = kept.num_rows
    return clock


def fastest(run, repeat: int) -> Clock:
    return min((run() for _ in range(max(repeat, 1))), key=lambda clock: clock.total()[0])


def features_time(messages: pa.Table, naive: bool) -> Clock:
    con = duckdb.connect()
    apply_feature_sql(con)
    if naive:
        for macro in NAIVE_HINTS:
            con.execute(f"CREATE OR REPLACE MACRO {macro}() AS ''")
        con.execute("CREATE OR REPLACE MACRO is_indented(t) AS true")
    con.register("messages", messages)
    con.execute("CREATE TABLE subset AS SELECT * FROM messages")  # in DuckDB's own row groups, as in the cache build
    clock = Clock()
    with clock("features"):
        con.execute("CREATE TABLE features AS SELECT * FROM message_features_of('subset')")
    return clock


def head_conversations(table: pa.Table, n: int) -> pa.Table:
    """The first ``n`` messages of the generated table, to the end of the last conversation they touch,
    with the feedback on them."""
    messages = table.filter(pc.equal(table["event_type"], "message"))
    ids = pc.unique(messages.slice(0, n)["conversation_id"])
    return table.filter(pc.is_in(table["conversation_id"], value_set=ids))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000, help="Messages in the lake (default 1,000,000).")
    parser.add_argument("--python-messages", type=int, default=50_000,
                        help="Messages the Python reference runs on; its time is scaled to the lake (default 50,000).")
    parser.add_argument("--increment", type=int, default=10_000, help="Messages appended for the incremental figure.")
    parser.add_argument("--repeat", type=int, default=2,
                        help="Runs of the cold, warm and reference passes; each figure is the fastest (default 2).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n, n_py = args.messages, min(args.python_messages, args.messages)

    with tempfile.TemporaryDirectory(prefix="chatlake-bench-views-") as folder:
        home = Home.resolve(Path(folder) / "home").ensure()
        started = time.perf_counter()
        table = synthetic_messages(n, seed=args.seed)
        generated = time.perf_counter() - started
        store = EventStore(home)
        started = time.perf_counter()
        messages_only = table.filter(pc.equal(table["event_type"], "message"))
        for offset in range(0, messages_only.num_rows, 100_000):
            store.append(messages_only.slice(offset, 100_000))
        store.append(table.filter(pc.equal(table["event_type"], "feedback")))
        appended = time.perf_counter() - started
        conversations = pc.count_distinct(messages_only["conversation_id"]).as_py()
        print(f"lake: {n:,} messages in {conversations:,} conversations, {len(store.files())} data files "
              f"(generated in {generated:.1f} s, appended in {appended:.1f} s); {os.cpu_count()} cores, "
              f"DuckDB {duckdb.__version__}; load average {os.getloadavg()[0]:.1f} at the start")

        # On a shared machine the neighbours' load comes and goes: every pass runs --repeat times, the
        # fastest counts (for the reference too).
        cold = fastest(lambda: sql_pass(home, store, cold=True), args.repeat)
        warm = fastest(lambda: sql_pass(home, store), args.repeat)
        store.append(synthetic_messages(args.increment, seed=args.seed + 1, id_prefix="inc"))
        incremental = sql_pass(home, store)

        subset = head_conversations(table, n_py)
        reference = Reference(home)
        results = []

        def reference_pass() -> Clock:
            python = Clock()
            with python("reference"):
                results.append(reference.run(subset))
            return python

        python = fastest(reference_pass, args.repeat)
        result = results[0]
        py_messages = len(result["messages"])
        scale = n / py_messages
        py_wall, py_cpu = (t * scale for t in python.total())

        sub_messages = (subset.filter(pc.equal(subset["event_type"], "message"))
                        .select(["event_id", "event_type", "role", "content"]))
        naive = fastest(lambda: features_time(sub_messages, True), args.repeat)
        prefiltered = fastest(lambda: features_time(sub_messages, False), args.repeat)

        def clean_pass() -> Clock:
            clock = Clock()
            with clock("clean"):
                for text in sub_messages["content"].to_pylist():
                    reference.clean(text)
            return clock

        py_clean = fastest(clean_pass, args.repeat)
        load_end = os.getloadavg()[0]

        # parity of the reference with the SQL on the subset
        con = connect(home)
        con.register("subset_ids", pa.table({"message_id": [m["message_id"] for m in result["messages"]]}))
        sql_text = dict(con.execute("SELECT message_id, content FROM clean_messages "
                                    "SEMI JOIN subset_ids USING (message_id)").fetchall())
        same_text = sum(sql_text.get(m["message_id"]) == m["text"] for m in result["messages"])
        con.register("subset_conversations", pa.table({"conversation_id": list(result["conversations"])}))
        sql_reasons = dict(con.execute("SELECT conversation_id, reasons FROM quality "
                                       "SEMI JOIN subset_conversations USING (conversation_id)").fetchall())
        same_reasons = sum(sql_reasons.get(cid) == c["reasons"] for cid, c in result["conversations"].items())

        def row(label: str, wall: float, cpu: float, note: str) -> None:
            print(f"{label:58s} {wall:8.1f} {cpu:8.1f} {py_wall / wall:7.1f}x {py_cpu / cpu:7.1f}x   {note}")

        def phases(clock: Clock) -> str:
            return ", ".join(f"{name} {clock.wall[name]:.1f}" for name in clock.wall)

        print(f"\n{'':58s} {'wall s':>8s} {'CPU s':>8s} {'wall':>8s} {'CPU':>8s}   (vs the Python loop)")
        row("Python loop: clean, filter, hash, stats (reference)", py_wall, py_cpu,
            f"measured on {py_messages:,} messages ({python.wall['reference']:.1f} s), scaled x{scale:.1f}")
        row("SQL cold: clean + dedup (exact, MinHash) + quality + stats", *cold.total(), "wall s: " + phases(cold))
        row("SQL warm: feature cache up to date", *warm.total(), "wall s: " + phases(warm))
        row(f"SQL after appending {args.increment:,} messages", *incremental.total(), "wall s: " + phases(incremental))

        per_cold = cold.cpu["features"] / n * 1e6
        per_new = incremental.cpu["features"] / args.increment * 1e6
        rest = incremental.wall["connect"] + incremental.wall["materialize"] + incremental.wall["queries"]
        print(f"\nincremental: the feature build (cleaning, hashing, shingling, partials) took {incremental.wall['features']:.2f} s wall, "
              f"{incremental.cpu['features']:.2f} s CPU for the {args.increment:,} new messages ({per_new:.0f} us CPU each) "
              "against "
              f"{cold.wall['features']:.1f} s wall, {cold.cpu['features']:.1f} s CPU for the {n:,} of the cold build "
              f"({per_cold:.0f} us each): it grows with the new data. What still grows with the lake is reading the cache "
              f"and the set-wide steps (dedup, stats): {rest:.1f} s wall.")
        print(f"\nnaive SQL is not automatically fast (cleaning + hashing the {py_messages:,} reference messages):")
        for label, clock, note in (("Python loop", py_clean, ""),
                                   ("SQL, no prefilters", naive, "every regex on every message, whitespace by regex"),
                                   ("SQL, prefiltered", prefiltered,
                                    "one DFA scan for all hints, then only the messages that match")):
            wall, cpu = clock.total()
            print(f"  {label:20s} {wall:6.2f} s wall {cpu:6.2f} s CPU   {py_clean.total()[0] / wall:5.1f}x wall "
                  f"{py_clean.total()[1] / cpu:5.1f}x CPU   {note}")
        print(f"\nparity of the reference with the SQL: cleaned text identical for {same_text:,} of {py_messages:,} "
              f"messages, quality reasons identical for {same_reasons:,} of {len(result['conversations']):,} conversations; "
              f"kept messages: SQL {cold.kept:,} of {n:,}. Load average {load_end:.1f} at the end (2 cores: wall times "
              f"on a busy machine are longer than CPU times).")


if __name__ == "__main__":
    main()
