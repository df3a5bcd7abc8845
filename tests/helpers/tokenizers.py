"""A tiny tokenizer built on the fly (no network): BPE trained on a few sentences, Llama-2 style (byte fallback,
Metaspace), wrapped as a ``PreTrainedTokenizerFast`` with a ChatML chat template that has ``{% generation %}``
markers (TRL's ``assistant_only_loss`` needs them). Saved to a folder, so it loads like a real one by path.

Also ``TOOLS_TEMPLATE``, a template with tool use, and the ``tools_tokenizer`` fixture (the tokenizer with it).

Ask for the ``tiny_tokenizer`` fixture (the folder) by name (``tests/conftest.py`` registers this module as a
plugin).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Tool use in the style of Qwen2.5 / Hermes: the offered tools in the system turn, each call as JSON inside
# <tool_call></tool_call> in the assistant turn, tool results as <tool_response> blocks of a user turn
# (consecutive results share one); a reply's reasoning_content as <think>...</think> (Qwen3). Marked for
# {% generation %}; real templates have no markers (strip them).
TOOLS_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\n\n' }}{%- endif %}"
    "{{- '# Tools\n\nYou may call functions. Their signatures are within <tools></tools>:\n<tools>' }}"
    "{%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\n</tools>\n\nReturn each call as JSON within <tool_call></tool_call> tags.<|im_end|>\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}{% generation %}"
    "{%- if message.reasoning_content %}{{- '<think>\n' + message.reasoning_content + '\n</think>\n\n' }}{%- endif %}"
    "{{- message.content }}"
    "{%- for call in message.tool_calls or [] %}"
    "{%- if message.content or not loop.first %}{{- '\n' }}{%- endif %}"
    "{{- '<tool_call>\n{\"name\": \"' + call.function.name + '\", \"arguments\": ' + (call.function.arguments | tojson)"
    " + '}\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}{% endgeneration %}{{- '\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Hello, how are you today? I am fine, thank you.",
    "What is the capital of France? The capital of France is Paris.",
    "Please explain how a list works in Python with an example.",
    "The quick brown fox jumps over the lazy dog.",
    "Train the model on the data, then test it and report the error.",
    "Could you help me write a function that returns the value of a file?",
]


def build_tiny_tokenizer(folder: Path, vocab_size: int = 300) -> Path:
    """Train and save the tokenizer into ``folder``; returns the folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    metaspace = dict(replacement="▁", prepend_scheme="first")
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(**metaspace)
    trained.train_from_iterator(CORPUS * 4, trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False))
    model = json.loads(trained.to_str())["model"]
    # Llama-2 layout: special tokens, then the 256 byte tokens (any character outside the vocabulary falls
    # back to its UTF-8 bytes, never to <unk>), then the learned pieces.
    pieces = SPECIAL_TOKENS + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]) if t not in SPECIAL_TOKENS]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(pieces)}, merges=merges, unk_token="<unk>",
                               byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(**metaspace)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(SPECIAL_TOKENS)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="<|im_end|>",
                                      pad_token="</s>", additional_special_tokens=["<|im_start|>"])
    wrapped.chat_template = CHATML_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer"))


@pytest.fixture(scope="session")
def tools_tokenizer(tiny_tokenizer, tmp_path_factory) -> Path:
    """The tiny tokenizer with TOOLS_TEMPLATE, without its generation markers (as real templates are)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    tok.chat_template = TOOLS_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    folder = tmp_path_factory.mktemp("tools-tokenizer")
    tok.save_pretrained(folder)
    return folder


def trained_text(tokenizer, ids, labels) -> list[str]:
    """The stretches of tokens the loss counts (labels not ``IGNORE``), decoded: what a mask trains on."""
    from pipelines.train.collate import IGNORE

    spans, current = [], []
    for t, label in zip(ids.tolist(), labels.tolist()):
        if label != IGNORE:
            current.append(t)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return [tokenizer.decode(s) for s in spans]
