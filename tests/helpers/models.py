"""A tiny Llama-shaped causal LM with random weights, saved with the tiny tokenizer so it loads by path like a
real base model (``AutoTokenizer`` and ``AutoModelForCausalLM`` on one folder), with no download.

Ask for the ``tiny_model`` fixture (the folder) by name: ``tests/conftest.py`` registers this module and
``tests.helpers.tokenizers`` as plugins.

Also here, for the training and evaluation tests: ``learnable`` (a home with a snapshot whose replies follow a
learnable rule) and ``trained`` (one LoRA run on it, registered as ``tiny`` v1), built once per session.

The weights are initialised with a larger spread than transformers' default (0.2, not 0.02): with the default
a 64-wide model's output layer is so small that its predictions stay near uniform whatever the adapter does,
and nothing could be learned without training the output layer itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def build_tiny_model(folder: Path, tokenizer_dir: Path, *, seed: int = 0) -> Path:
    """Save a 2-layer, 64-wide Llama (grouped-query attention) sized to the tokenizer, and the tokenizer."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
                         initializer_range=0.2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread in every test module that asks for it (``pytestmark``): tiny models
    gain nothing from threads, and on a busy two-core machine threads waiting on each other make every step
    many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer, tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), Path(tiny_tokenizer))


# -- a snapshot a model can learn from -------------------------------------------------------------------

WORDS = ("hello capital France Paris python list example quick brown fox lazy dog model data test error "
         "function value file report").split()
ANSWER = dict(zip(WORDS, WORDS[7:] + WORDS[:7]))  # a fixed permutation: the word to answer for each first word


def learnable_conversation(rng) -> tuple[str, str]:
    """(user, assistant): six distinct words, and a reply that names the image of the first word."""
    words = rng.sample(WORDS, 6)
    return " ".join(words) + "?", f"The answer is {ANSWER[words[0]]}."


def build_learnable_snapshot(home, n: int = 240, seed: int = 0) -> str:
    """Log ``n`` learnable conversations into ``home`` and cut a snapshot (70/10/20 split); returns its id."""
    import random

    from lake.logger import ConversationLogger
    from pipelines.snapshot import create_snapshot
    from schemas.config import SnapshotConfig, SplitRatios

    rng = random.Random(seed)
    logger = ConversationLogger(home, source="test", auto_fold=False)
    for i in range(n):
        user, assistant = learnable_conversation(rng)
        logger.log_turn(f"conv-{i:04d}", user=user, assistant=assistant, model="synthetic")
    logger.close()
    config = SnapshotConfig(split=SplitRatios(train=0.7, validation=0.1, test=0.2), drop_duplicates=False,
                            drop_near_duplicates=False)
    return str(create_snapshot(home, config).id)


@pytest.fixture(scope="session")
def learnable(tmp_path_factory):
    """(home, snapshot id) of a home holding one learnable snapshot, shared by the training tests."""
    from lake.home import Home

    home = Home.resolve(tmp_path_factory.mktemp("learnable") / "home").ensure()
    return home, build_learnable_snapshot(home)


# A small config that learns the rule in a few dozen steps on two CPU cores.
FAST = dict(max_seq_len=256, batch_tokens=1024, max_steps=30, learning_rate=5e-3, lora_r=16, lora_alpha=32,
            lora_dropout=0.0, warmup_ratio=0.0, eval_steps=10, save_steps=10, gradient_checkpointing=False)


@pytest.fixture(scope="session")
def trained(learnable, tiny_model):
    """(home, snapshot id, TrainResult) of one LoRA run on the learnable snapshot, registered as ``tiny``."""
    from pipelines.train.training import train
    from schemas.train import TrainConfig

    home, snapshot = learnable
    return home, snapshot, train(home, snapshot, str(tiny_model), name="tiny", config=TrainConfig(**FAST),
                                 progress=False)
