"""A tiny tokenizer built on the fly (no network): BPE trained on a few sentences, Llama-2 style (byte fallback,
Metaspace), wrapped as a ``PreTrainedTokenizerFast`` with a ChatML chat template that has ``{% generation %}``
markers (TRL's ``assistant_only_loss`` needs them). Saved to a folder, so it loads like a real one by path.

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
