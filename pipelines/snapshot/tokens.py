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


def prefix_counts(tok: Any, conversations: list[list[dict]]) -> pa.Table:
    """Token count of every prefix that ends with an assistant reply.

    Returns ``(row, position, tokens)``: ``row`` indexes ``conversations``, ``position`` is the 1-based
    position of the reply in it.
    """
    rows, positions, prefixes = [], [], []
    for row, messages in enumerate(conversations):
        for position, message in enumerate(messages, start=1):
            if message["role"] == "assistant":
                rows.append(row)
                positions.append(position)
                prefixes.append(messages[:position])
    if not prefixes:
        return pa.table({"row": pa.array([], pa.int64()), "position": pa.array([], pa.int32()),
                         "tokens": pa.array([], pa.int32())})
    texts = tok.apply_chat_template(prefixes, tokenize=False)
    lengths = tok(texts, add_special_tokens=False, return_attention_mask=False, return_length=True)["length"]
    return pa.table({"row": pa.array(rows, pa.int64()), "position": pa.array(positions, pa.int32()),
                     "tokens": pa.array(lengths, pa.int32())})
