"""Training on tool use: conversations logged as an agent holds them (OpenAI-shaped tool calls, ``role: tool``
results, offered tools) are cut into a snapshot and trained through a chat template that supports tools
(Qwen2.5/Hermes style): the loss covers the assistant turns, call JSON included, and never the tool results
or the tool definitions."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import numpy as np  # noqa: E402

from tests.helpers.tokenizers import TOOLS_TEMPLATE, trained_text  # noqa: E402
from pipelines.snapshot.chat import chat_messages, chat_tools  # noqa: E402
from pipelines.train.collate import tokenize_conversations  # noqa: E402
from schemas.train import TrainConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNMARKED = TOOLS_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
LOOKUP = {"type": "function", "function": {"name": "lookup", "description": "the answer for a word",
                                           "parameters": {"type": "object",
                                                          "properties": {"word": {"type": "string"}}}}}
WORDS = "fox dog list model data file value error".split()
ANSWERS = dict(zip(WORDS, WORDS[3:] + WORDS[:3]))


def tool_conversation(word: str, city: str) -> list[dict]:
    """An agent's turn: the user asks, the assistant calls the tool (no text), the tool answers, the assistant
    answers with the result."""
    return [{"role": "user", "content": f"quick {word} in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup",
                                                                  "arguments": json.dumps({"word": word})}}]},
            {"role": "tool", "tool_call_id": "call_1", "name": "lookup", "content": ANSWERS[word]},
            {"role": "assistant", "content": f"The answer is {ANSWERS[word]}."}]


@pytest.fixture(scope="module")
def tokenizer(tools_tokenizer):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tools_tokenizer)


def test_the_mask_covers_the_calls_and_the_answers_not_the_results_nor_the_tools(tokenizer):
    conversation = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "quick fox and dog?"},
                    {"role": "assistant", "content": "Let me look.", "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"word": "fox"}'}},
                        {"id": "c2", "type": "function", "function": {"name": "lookup", "arguments": {"word": "dog"}}}]},
                    {"role": "tool", "tool_call_id": "c1", "name": "lookup", "content": "quick result"},
                    {"role": "tool", "tool_call_id": "c2", "name": "lookup", "content": "lazy result"},
                    {"role": "assistant", "content": "The fox is quick."}]
    messages, tools = chat_messages(conversation, reasoning=False), chat_tools([LOOKUP])
    ex = tokenize_conversations(tokenizer, [messages], 2048, tools=[tools])
    calls = ('Let me look.\n<tool_call>\n{"name": "lookup", "arguments": {"word": "fox"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "lookup", "arguments": {"word": "dog"}}\n</tool_call><|im_end|>')
    assert trained_text(tokenizer, *ex.example(0)) == [calls, "The fox is quick.<|im_end|>"]
    whole = tokenizer.decode(ex.example(0)[0])
    assert "<tool_response>\nquick result\n</tool_response>" in whole  # rendered, as context only
    assert '"description": "the answer for a word"' in whole and "Be brief." in whole
    # the same mask as the template's own {% generation %} markers give
    marked = tokenize_conversations(tokenizer, [messages], 2048, template=TOOLS_TEMPLATE, tools=[tools])
    assert np.array_equal(marked.input_ids, ex.input_ids) and np.array_equal(marked.labels, ex.labels)
    # without the tools, the template writes no definitions; the calls are still the reply
    bare = tokenize_conversations(tokenizer, [messages], 2048)
    assert "<tools>" not in tokenizer.decode(bare.input_ids) and trained_text(tokenizer, *bare.example(0))[0] == calls


def test_reasoning_is_trained_only_when_the_snapshot_says_so(home, tokenizer):
    from lake.logger import ConversationLogger
    from pipelines.snapshot import create_snapshot
    from pipelines.train.training import snapshot_chats
    from schemas.config import SnapshotConfig, SplitRatios

    logger = ConversationLogger(home, source="agent", auto_fold=False)
    logger.log_messages("thinking", [{"role": "user", "content": "quick fox?"},
                                     {"role": "assistant", "content": "The answer is dog.",
                                      "reasoning_content": "fox maps to dog"}])
    logger.close()
    everything = SplitRatios(train=1, validation=0, test=0)
    kept_in_data = create_snapshot(home, SnapshotConfig(split=everything))
    trained_on = create_snapshot(home, SnapshotConfig(split=everything, train_on_reasoning=True))
    assert "reasoning_content" not in snapshot_chats(home, kept_in_data.id, "train")[0][0][1]
    assert snapshot_chats(home, trained_on.id, "train")[0][0][1]["reasoning_content"] == "fox maps to dog"
    conversation = [{"role": "user", "content": "quick fox?"},
                    {"role": "assistant", "content": "The answer is dog.", "reasoning_content": "fox maps to dog"}]
    kept = tokenize_conversations(tokenizer, [chat_messages(conversation, reasoning=True)], 512,
                                  template=UNMARKED)
    left_out = tokenize_conversations(tokenizer, [chat_messages(conversation, reasoning=False)], 512,
                                      template=UNMARKED)
    assert trained_text(tokenizer, *kept.example(0)) == ["<think>\nfox maps to dog\n</think>\n\nThe answer is dog.<|im_end|>"]
    assert trained_text(tokenizer, *left_out.example(0)) == ["The answer is dog.<|im_end|>"]


def test_a_snapshot_of_tool_use_trains_with_the_calls_under_the_loss(home, tiny_model, tokenizer):
    from lake.logger import ConversationLogger
    from pipelines.snapshot import create_snapshot
    from pipelines.train.modeling import load_tokenizer
    from pipelines.train.training import snapshot_chats, train
    from schemas.config import SnapshotConfig, SplitRatios

    logger = ConversationLogger(home, source="agent", auto_fold=False)
    for i in range(40):
        logger.log_messages(f"tool-{i:02d}", tool_conversation(WORDS[i % len(WORDS)], f"town {i}"),
                            tools=[LOOKUP], model="agent-model")
    logger.close()
    snapshot = create_snapshot(home, SnapshotConfig(split=SplitRatios(train=0.8, validation=0.2, test=0),
                                                    drop_duplicates=False, drop_near_duplicates=False))
    conversations, tools = snapshot_chats(home, snapshot.id, "train")
    assert len(conversations) == snapshot.splits["train"].conversations > 20
    first = conversations[0]
    assert [m["role"] for m in first] == ["user", "assistant", "tool", "assistant"]
    assert first[1]["tool_calls"][0]["function"]["arguments"]["word"] in WORDS  # a mapping, as templates want
    assert (first[2]["name"], first[2]["tool_call_id"]) == ("lookup", "call_1")
    assert tools[0] == [LOOKUP]

    ex = tokenize_conversations(tokenizer, conversations, 512, tools=tools)
    assert ex.truncated == ex.dropped == 0
    for i, conversation in enumerate(conversations):
        word = conversation[0]["content"].split()[1]
        assert trained_text(tokenizer, *ex.example(i)) == [
            f'<tool_call>\n{{"name": "lookup", "arguments": {{"word": "{word}"}}}}\n</tool_call><|im_end|>',
            f"The answer is {ANSWERS[word]}.<|im_end|>"]

    config = TrainConfig(max_seq_len=512, batch_tokens=1024, max_steps=12, learning_rate=5e-3, lora_r=8,
                         lora_alpha=16, lora_dropout=0.0, warmup_ratio=0.0, eval_steps=6, save_steps=12,
                         logging_steps=2, gradient_checkpointing=False, chat_template=UNMARKED)
    result = train(home, snapshot.id, str(tiny_model), name="tiny-tools", config=config, progress=False)
    log = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert result.metrics["steps"] == 12 and losses[-1] < losses[0]
    # rendered with the tool definitions, and the loss on exactly the calls and answers masked above
    assert (result.metrics["train_tokens"], result.metrics["train_label_tokens"]) == (ex.offsets[-1], ex.label_tokens)
    assert load_tokenizer(result.adapter_path).chat_template == UNMARKED  # served with the template it learned
