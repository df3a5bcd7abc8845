"""Token counts of conversations after the model's chat template, through the batch tokenizer path.

For every assistant reply we count the tokens of the conversation up to and including it (its *prefix*),
rendered with the tokenizer's chat template. One list of prefix counts per conversation answers every length
question a snapshot asks: the length of the whole conversation (its last prefix), the length of each
single-turn example (the prefix of its reply), and where to cut an over-long conversation (after the last
reply whose prefix fits). Rendering is one ``apply_chat_template`` call over the whole batch and counting one
batch ``__call__``; the fast tokenizer encodes in parallel in Rust.

``transformers`` is optional: a tokenizer name without it fails at once with the ``pip install`` line.
Offline use follows the Hugging Face rules (``HF_HUB_OFFLINE=1``, or a local folder).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa

from pipelines.snapshot.chat import chat_messages, chat_tools
from schemas.errors import BadInput, Refused

INSTALL = "pip install 'transformers>=4.45' jinja2"


def load(tokenizer: Any) -> Any:
    """A tokenizer object from a Hugging Face id or local folder (an object is returned as it is)."""
    if not isinstance(tokenizer, str):
        return _checked(tokenizer)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise Refused(f"token counts need transformers: {INSTALL}") from None
    try:
        return _checked(AutoTokenizer.from_pretrained(tokenizer))
    except OSError as exc:
        raise BadInput(f"cannot load tokenizer {tokenizer!r}: {str(exc).splitlines()[0]}") from None


def _checked(tok: Any) -> Any:
    if not getattr(tok, "chat_template", None):
        raise BadInput("the tokenizer has no chat template: token counts are measured after the chat template")
    if not hasattr(tok, "backend_tokenizer"):
        raise BadInput("a fast (tokenizers-backed) tokenizer is needed for the batch path")
    return tok


def describe(tok: Any) -> dict:
    """Name, fingerprint (vocabulary, merges, normaliser, special tokens and chat template), template, size."""
    digest = hashlib.sha256(tok.backend_tokenizer.to_str().encode())
    digest.update(tok.chat_template.encode())
    return {"name_or_path": str(getattr(tok, "name_or_path", "") or "in-memory"), "fingerprint": digest.hexdigest(),
            "chat_template": tok.chat_template, "vocab_size": len(tok)}


def prefix_counts(tok: Any, conversations: list[list[dict]], tools: list[list[dict] | None],
                  reasoning: bool) -> pa.Table:
    """Token count of every prefix that ends with an assistant reply.

    ``conversations`` are canonical messages and ``tools`` each one's offered tools, rendered as training
    renders them (``chat.chat_messages``, ``chat.chat_tools``; ``reasoning``: snapshot.train_on_reasoning).
    Returns ``(row, position, tokens)``: ``row`` indexes ``conversations``, ``position`` is the 1-based
    position of the reply in it.
    """
    rows, positions, texts = [], [], []
    plain = []  # (row, position, prefix) of the conversations without tools: rendered in one batch call
    for row, (messages, offered) in enumerate(zip(conversations, tools)):
        chat, schemas = chat_messages(messages, reasoning), chat_tools(offered)
        ends = [position for position, m in enumerate(chat, start=1) if m["role"] == "assistant"]
        if schemas is None:
            plain += [(row, position, chat[:position]) for position in ends]
        elif ends:  # the template puts the tools in every prefix: one call per conversation
            rows += [row] * len(ends)
            positions += ends
            texts += tok.apply_chat_template([chat[:position] for position in ends], tools=schemas, tokenize=False)
    if plain:
        rows += [row for row, _, _ in plain]
        positions += [position for _, position, _ in plain]
        texts += tok.apply_chat_template([prefix for _, _, prefix in plain], tokenize=False)
    if not texts:
        return pa.table({"row": pa.array([], pa.int64()), "position": pa.array([], pa.int32()),
                         "tokens": pa.array([], pa.int32())})
    lengths = tok(texts, add_special_tokens=False, return_attention_mask=False, return_length=True)["length"]
    return pa.table({"row": pa.array(rows, pa.int64()), "position": pa.array(positions, pa.int32()),
                     "tokens": pa.array(lengths, pa.int32())})
