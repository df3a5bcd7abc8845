"""From conversations to training rows: tokens, the assistant-only loss mask, and packing with exact boundaries.

Loss mask. The loss counts the assistant's tokens only (its replies and the end-of-turn token that teaches it to
stop). A chat template with ``{% generation %}`` markers says where they are, and the tokenizer returns the mask.
The real instruct templates (Llama 3, Qwen 2.5, Gemma) have no markers, so for them each assistant reply is
located by rendering the conversation up to the reply (with the generation prompt) and up to the end of the
reply: the characters in between (less trailing whitespace) are the reply as the template writes it, end-of-turn
token included. Tokens overlapping those characters are trained. A template that rewrites earlier turns (so a
prefix of the conversation does not render as a prefix of the text) cannot be masked this way and is refused
with a clear error.

Tool use. A conversation is rendered with the tools offered in it (``apply_chat_template(..., tools=...)``) and
its replies' ``tool_calls``, so the template writes definitions, calls and results its own way. A reply that
calls tools is an assistant turn like any other: its call tokens (the template's ``<tool_call>{...}</tool_call>``
or the like) are trained. Tool results (role tool) and the tool definitions are context, never trained.

Packing. Conversations are packed into rows of at most ``max_seq_len`` tokens (best fit, longest first). Each
conversation's ``position_ids`` restart at 0 and no attention mask is passed: transformers derives a block-
diagonal causal mask from the restarts (SDPA, eager, flex) or runs varlen kernels (flash attention), so no token
attends across conversations and a packed row computes exactly what the conversations would compute one by
one (with ``use_cache=False``; a cache disables the detection). Padding at the end of a row is one more
"conversation" with no labels.

Storage is one flat int32 array of tokens and one of labels with offsets (not a Python list per token), so a
million-conversation snapshot fits in memory as a few hundred MB.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

import numpy as np

from schemas.errors import Refused

IGNORE = -100  # the label transformers' loss skips
_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


class MaskError(Refused, ValueError):
    """The chat template cannot be masked; the message says what to change."""


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and bool(_GENERATION_MARKER.search(template))


@dataclass
class Examples:
    """Tokenized conversations, stored flat: example ``i`` is ``input_ids[offsets[i]:offsets[i + 1]]``."""

    input_ids: np.ndarray  # int32, all examples back to back
    labels: np.ndarray  # int32, IGNORE outside assistant tokens
    offsets: np.ndarray  # int64, len(examples) + 1
    truncated: int = 0  # examples cut at max_seq_len
    dropped: int = 0  # examples left without an assistant token (after the cut)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.input_ids[a:b], self.labels[a:b]

    @property
    def label_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())


def _render(tokenizer, messages: list[dict], template: str | None, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template, **kwargs)


def assistant_spans(tokenizer, messages: list[dict], template: str | None = None,
                    tools: list[dict] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant replies (prefix differences)."""
    text = _render(tokenizer, messages, template, tools=tools)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], template, tools=tools, add_generation_prompt=True) if i else ""
        through = _render(tokenizer, messages[: i + 1], template, tools=tools)
        if not (through.startswith(before) and text.startswith(through)):
            raise MaskError("the chat template renders a conversation's beginning differently from the whole "
                            "conversation, so the assistant's tokens cannot be found; add {% generation %} "
                            "markers around the assistant reply in the template (TrainConfig.chat_template)")
        # Whitespace the template writes after the end-of-turn token separates turns; it is not the reply.
        spans.append((len(before), len(through.rstrip())))
    return text, spans


def _mask_from_spans(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for every token whose characters overlap a span (offsets and spans are both in order)."""
    mask, k = [0] * len(offsets), 0
    for t, (start, end) in enumerate(offsets):
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        if k == len(spans):
            break
        if end > spans[k][0] and start < spans[k][1]:
            mask[t] = 1
    return mask


def tokenize_conversations(tokenizer, conversations: list[list[dict]], max_seq_len: int,
                           template: str | None = None, tools: list[list[dict] | None] | None = None) -> Examples:
    """Tokens and assistant-only labels of each conversation, cut at ``max_seq_len``; ``tools``, aligned with
    ``conversations``, are the tools offered in each (None: none).

    A conversation with no assistant token left after the cut is dropped (counted in ``dropped``): it would
    cost compute and teach nothing.
    """
    template = template or tokenizer.chat_template
    if not template:
        raise MaskError("the tokenizer has no chat template: set chat_template in the training config")
    if not conversations:
        return Examples(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(1, np.int64))
    tools = tools or [None] * len(conversations)
    if has_generation_markers(template):
        marked = dict(chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        if not any(tools):  # one batch call
            enc = tokenizer.apply_chat_template(conversations, **marked)
            ids_list, masks = enc["input_ids"], enc["assistant_masks"]
        else:  # a call per conversation: the tools are one argument of the whole batch
            encs = [tokenizer.apply_chat_template(c, tools=t, **marked) for c, t in zip(conversations, tools)]
            ids_list, masks = [e["input_ids"] for e in encs], [e["assistant_masks"] for e in encs]
    else:
        if not getattr(tokenizer, "is_fast", False):
            raise MaskError("finding the assistant's tokens without {% generation %} markers needs a fast "
                            "tokenizer (character offsets)")
        rendered = [assistant_spans(tokenizer, c, template, t) for c, t in zip(conversations, tools)]
        enc = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
        ids_list = enc["input_ids"]
        masks = [_mask_from_spans(offs, spans) for offs, (_, spans) in zip(enc["offset_mapping"], rendered)]

    kept_ids, kept_labels, lengths = [], [], []
    truncated = dropped = 0
    for ids, mask in zip(ids_list, masks):
        ids = np.asarray(ids, dtype=np.int32)
        labels = np.where(np.asarray(mask, dtype=bool), ids, IGNORE).astype(np.int32)
        if len(ids) > max_seq_len:
            ids, labels = ids[:max_seq_len], labels[:max_seq_len]
            truncated += 1
        labels[0] = IGNORE  # the first token is never predicted; see PackedRows
        if not (labels != IGNORE).any():
            dropped += 1
            continue
        kept_ids.append(ids)
        kept_labels.append(labels)
        lengths.append(len(ids))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int32))
    return Examples(cat(kept_ids), cat(kept_labels), offsets, truncated=truncated, dropped=dropped)


def pack(lengths, capacity: int) -> list[list[int]]:
    """Best-fit decreasing: group example indices into rows of at most ``capacity`` tokens.

    Deterministic for equal inputs (ties go to the lower index), so every process of a distributed run builds
    the same rows. Each row's examples are listed in index order.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (tokens left, row), sorted
    for i in order:
        n = int(lengths[i])
        if n > capacity:
            raise ValueError(f"example {i} has {n} tokens, more than the row capacity {capacity}")
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            left, row = free.pop(k)
        else:
            left, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        if left - n > 0:
            bisect.insort(free, (left - n, row))
    return [sorted(r) for r in rows]


class PackedRows:
    """A map-style dataset (``torch.utils.data.Dataset`` protocol) of rows of concatenated examples.

    ``position_ids`` restart at each example; the label of each example's first token is IGNORE (set at
    tokenization), because the model's shift would otherwise predict it from the previous example's last token.
    """

    def __init__(self, examples: Examples, rows: list[list[int]]):
        self.examples, self.rows = examples, rows

    @classmethod
    def build(cls, examples: Examples, max_seq_len: int, packing: bool = True) -> "PackedRows":
        rows = pack(examples.lengths, max_seq_len) if packing else [[i] for i in range(len(examples))]
        return cls(examples, rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        parts = [self.examples.example(j) for j in self.rows[i]]
        return {"input_ids": np.concatenate([p[0] for p in parts]),
                "labels": np.concatenate([p[1] for p in parts]),
                "position_ids": np.concatenate([np.arange(len(p[0])) for p in parts])}

    @property
    def tokens(self) -> int:
        return int(self.examples.offsets[-1])


class PackedCollator:
    """Stack rows into a batch: right padding that is its own masked-out 'example', and no attention mask."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id, self.multiple = pad_token_id, pad_to_multiple_of

    def __call__(self, rows: list[dict[str, np.ndarray]]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        n = len(rows)
        input_ids = np.full((n, width), self.pad_token_id, dtype=np.int64)
        labels = np.full((n, width), IGNORE, dtype=np.int64)
        position_ids = np.tile(np.arange(width, dtype=np.int64), (n, 1))
        for b, r in enumerate(rows):
            k = len(r["input_ids"])
            input_ids[b, :k], labels[b, :k], position_ids[b, :k] = r["input_ids"], r["labels"], r["position_ids"]
            position_ids[b, k:] -= k  # the padding restarts at 0: its own example, attended by nothing real
        return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels),
                "position_ids": torch.from_numpy(position_ids)}
