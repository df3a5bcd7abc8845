"""LoRA training throughput: padded batches (the reference) against packed rows with exact boundaries.

Model: Llama-3.2-1B-shaped, random weights (no download), LoRA r=16 on every linear layer, bf16. Data:
synthetic chat examples with lognormal lengths (median ~300 tokens), the loss on their second half (the
"assistant" share), tokenized into ``pipelines.train.collate.Examples`` and packed by the same code as training.

Variants, measured in the same run:

* ``padded-sdpa`` (reference): batches of 8 examples, right padding, attention mask, SDPA, the model's loss;
* ``packed-leaky-sdpa`` (reference): examples concatenated into rows of ``--row-tokens`` with plain causal
  attention: fast but wrong, tokens attend across examples;
* ``packed-exact-sdpa``: rows from ``pack`` with ``position_ids`` restarting per example and no attention mask
  (transformers builds a block-diagonal mask: exact, but dense O(row^2) attention);
* ``packed-exact-flex``: the same rows with flex attention, whose block mask skips the blocks between
  examples (exact and sparse);
* ``+chunked-ce``: the loss from the hidden states in chunks of positions that are scored, each chunk's logits
  recomputed in the backward pass: the 128k-vocabulary logits never exist for the whole row;
* ``+compile``: ``torch.compile`` of each decoder layer.

Figures: real (non-padding) tokens per second, MFU and peak memory. MFU counts 4·N FLOPs per token for the
linear layers (forward 2N; backward 2N for the activation gradients only, the base weights being frozen) plus
causal attention within each example (3 × 2·2·layers·width·L²/2 per example), over the bf16 matmul peak
measured on the device in the same run. The exact variants must give the padded reference's loss on the same
examples (checked and printed).

``--smoke`` (and any run without a GPU) trains a tiny model on the CPU for two steps per variant, so the script
is known to execute where there is no GPU; its figures mean nothing. Flex attention and ``torch.compile`` are
left out of it: flex has no backward pass on the CPU, and compiling takes minutes on two cores.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.train.collate import IGNORE, Examples, PackedCollator, PackedRows  # noqa: E402


def model_config(smoke: bool):
    from transformers import LlamaConfig

    if smoke:
        # a wide initialisation, so that the tiny model's predictions are far from uniform and the exactness
        # check below can see a difference
        return LlamaConfig(vocab_size=2048, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                           tie_word_embeddings=True, initializer_range=0.2)
    return LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                       rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)


def synthetic_examples(n: int, median: int, vocab: int, max_len: int, seed: int = 0) -> Examples:
    """Chat-like examples: lognormal lengths around ``median``, the second half of each one scored."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(math.log(median), 0.6, n).astype(int), 16, max_len)
    ids = rng.integers(3, vocab, size=int(lengths.sum()), dtype=np.int32)
    labels = ids.copy()
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    for a, n_tok in zip(offsets[:-1], lengths):
        labels[a:a + n_tok // 2] = IGNORE  # the "prompt" half
    return Examples(ids, labels, offsets)


# -- batches ---------------------------------------------------------------------------------------------


def padded_batches(ex: Examples, batch: int):
    for start in range(0, len(ex) - batch + 1, batch):
        parts = [ex.example(i) for i in range(start, start + batch)]
        width = max(len(p[0]) for p in parts)
        ids = torch.zeros(batch, width, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE, dtype=torch.long)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for b, (i, lab) in enumerate(parts):
            ids[b, :len(i)], labels[b, :len(i)], mask[b, :len(i)] = torch.from_numpy(i), torch.from_numpy(lab), 1
        yield {"input_ids": ids, "labels": labels, "attention_mask": mask}


def leaky_batches(ex: Examples, row_tokens: int):
    """Rows cut from the concatenation of all examples, positions 0..row-1: attention crosses examples."""
    for start in range(0, len(ex.input_ids) - row_tokens + 1, row_tokens):
        ids = torch.from_numpy(ex.input_ids[start:start + row_tokens]).long()[None]
        yield {"input_ids": ids, "labels": torch.from_numpy(ex.labels[start:start + row_tokens]).long()[None]}


def exact_batches(ex: Examples, row_tokens: int):
    rows = PackedRows.build(ex, row_tokens)
    collate = PackedCollator(0, pad_to_multiple_of=128)
    for i in range(len(rows)):
        yield collate([rows[i]])


# -- model and step --------------------------------------------------------------------------------------


def build_model(config, attn: str, device: str, dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    config._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.config.use_cache = False
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def chunked_loss(model, batch, chunk: int = 4096):
    """Mean loss over the scored positions, computing the logits ``chunk`` positions at a time and again in the
    backward pass (checkpointed), so the full-vocabulary logits never exist for the whole row."""
    from torch.utils.checkpoint import checkpoint

    inner = model.get_base_model()
    hidden = inner.model(input_ids=batch["input_ids"], position_ids=batch.get("position_ids"),
                         attention_mask=batch.get("attention_mask"), use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:].reshape(-1)
    keep = (targets != IGNORE).nonzero().flatten()
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])[keep]
    t = targets[keep]
    weight = inner.lm_head.weight

    def piece(h_chunk, t_chunk):
        return F.cross_entropy((h_chunk @ weight.T).float(), t_chunk, reduction="sum")

    total = sum(checkpoint(piece, h[i:i + chunk], t[i:i + chunk], use_reentrant=False)
                for i in range(0, len(t), chunk))
    return total / max(len(t), 1)


def loss_of(model, batch, chunked: bool):
    if chunked:
        return chunked_loss(model, batch)
    return model(**batch, use_cache=False).loss


def attention_flops(ex_lengths: list[int], config) -> float:
    width = config.num_attention_heads * (config.head_dim or config.hidden_size // config.num_attention_heads)
    return sum(3 * 2 * 2 * config.num_hidden_layers * width * n * n / 2 for n in ex_lengths)


def measured_peak(device: str, dtype) -> float:
    """bf16 matmul FLOP/s of this device, measured now (the denominator of MFU)."""
    n = 8192 if device == "cuda" else 512
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 20 if device == "cuda" else 3
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_variant(name: str, config, examples: Examples, args, device: str, dtype, peak: float) -> dict:
    attn = "flex_attention" if "flex" in name else "sdpa"
    chunked, compiled = "chunked" in name, "compile" in name
    if name.startswith("padded"):
        batches = list(padded_batches(examples, 8))
    elif name.startswith("packed-leaky"):
        batches = list(leaky_batches(examples, args.row_tokens))
    else:
        batches = list(exact_batches(examples, args.row_tokens))
    model = build_model(config, attn, device, dtype)
    if compiled:  # each decoder layer in place, so both the model's loss and chunked_loss run compiled code
        for layer in model.get_base_model().model.layers:
            layer.compile()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    need = args.warmup + args.steps
    if len(batches) < need:
        raise SystemExit(f"{name}: {len(batches)} batches, need {need}: raise --examples")
    tokens = flops = 0.0
    for k, batch in enumerate(batches[:need]):
        if k == args.warmup:
            _sync(device)
            start = time.perf_counter()
        batch = {key: v.to(device) for key, v in batch.items()}
        loss = loss_of(model, batch, chunked)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if k >= args.warmup:
            real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            tokens += real
            flops += 4 * args.params * real
    _sync(device)
    seconds = time.perf_counter() - start
    flops += attention_flops(_doc_lengths(batches[args.warmup:need]), config)
    return {"variant": name, "tokens_per_s": tokens / seconds, "mfu": flops / seconds / peak,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")}


def _doc_lengths(batches) -> list[int]:
    lengths = []
    for b in batches:
        if "attention_mask" in b:
            lengths += b["attention_mask"].sum(1).tolist()
        elif "position_ids" in b:
            pos = b["position_ids"][0]
            starts = (pos == 0).nonzero().flatten().tolist() + [len(pos)]
            lengths += [e - s for s, e in zip(starts, starts[1:])]
        else:
            lengths.append(b["input_ids"].shape[1])
    return lengths


def check_exact(config, examples: Examples, device: str, attn: str) -> tuple[float, float]:
    """Loss differences from the padded reference on the same 8 examples (fp32, no training): the exact packed
    rows with chunked loss (0 up to rounding), and the leaky rows (the control: clearly not 0)."""
    model = build_model(config, attn, device, torch.float32).eval()
    ex = Examples(*_first(examples, 8))
    padded = next(padded_batches(ex, 8))
    packed = next(exact_batches(ex, int(ex.offsets[-1]) + 128))
    leaky = {"input_ids": packed["input_ids"], "labels": packed["labels"]}
    with torch.no_grad():
        reference, exact, leaked = (loss_of(model, {k: v.to(device) for k, v in b.items()}, chunked).item()
                                    for b, chunked in ((padded, False), (packed, True), (leaky, False)))
    return abs(exact - reference), abs(leaked - reference)


def _first(ex: Examples, n: int):
    end = int(ex.offsets[n])
    return ex.input_ids[:end], ex.labels[:end], ex.offsets[:n + 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="Tiny model on the CPU: checks the code runs.")
    parser.add_argument("--steps", type=int, default=None, help="Measured steps per variant.")
    parser.add_argument("--warmup", type=int, default=None, help="Steps before measuring (compilation, caches).")
    parser.add_argument("--row-tokens", type=int, default=None, help="Tokens per packed row.")
    parser.add_argument("--examples", type=int, default=None, help="Synthetic examples generated.")
    parser.add_argument("--variants", default=None, help="Comma-separated subset of the variants.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside transformers and peft
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        print("no GPU here: the CPU smoke run instead (`make bench` stays green; the GPU figures need a GPU)")
    smoke = device == "cpu"
    args.steps = args.steps or (2 if smoke else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke else 3)
    args.row_tokens = args.row_tokens or (1024 if smoke else 16384)
    args.examples = args.examples or (120 if smoke else 1200)
    dtype = torch.float32 if smoke else torch.bfloat16
    config = model_config(smoke)
    examples = synthetic_examples(args.examples, 60 if smoke else 300, config.vocab_size,
                                  min(2048, args.row_tokens))
    from accelerate import init_empty_weights
    from transformers import LlamaForCausalLM

    with init_empty_weights():
        args.params = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    variants = ["padded-sdpa", "packed-leaky-sdpa", "packed-exact-sdpa", "packed-exact-flex",
                "packed-exact-flex+chunked-ce", "packed-exact-flex+chunked-ce+compile"]
    if smoke:
        variants = ["padded-sdpa", "packed-leaky-sdpa", "packed-exact-sdpa", "packed-exact-sdpa+chunked-ce"]
    if args.variants:
        variants = args.variants.split(",")
    peak = measured_peak(device, dtype)
    lengths = examples.lengths
    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; {args.params / 1e6:.1f}M params; "
          f"{len(examples)} examples, median {int(np.median(lengths))} tokens; rows of {args.row_tokens}; "
          f"measured matmul peak {peak / 1e12:.3g} TFLOP/s" + ("; SMOKE RUN: figures mean nothing" if smoke else ""))
    exact_attn = "sdpa" if smoke else "flex_attention"
    exact, leaked = check_exact(config, examples, device, exact_attn)
    print(f"exactness on 8 examples: |loss(packed exact, {exact_attn}, chunked) - loss(padded)| = {exact:.1e}; "
          f"leaky rows: {leaked:.1e}")
    results = []
    for name in variants:
        try:
            results.append(run_variant(name, config, examples, args, device, dtype, peak))
        except torch.OutOfMemoryError:
            results.append({"variant": name, "error": "out of memory"})
        except Exception as exc:  # a lever that does not work here is a result, not the end of the run
            results.append({"variant": name, "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:80]}"})
        if device == "cuda":
            torch.cuda.empty_cache()
    reference = next((r for r in results if r["variant"] == "padded-sdpa" and "error" not in r), None)
    print(f"{'variant':40} {'tokens/s':>10} {'vs padded':>9} {'MFU':>6} {'peak GiB':>9}")
    for r in results:
        if "error" in r:
            print(f"{r['variant']:40} {r['error']}")
            continue
        ratio = r["tokens_per_s"] / reference["tokens_per_s"] if reference else float("nan")
        print(f"{r['variant']:40} {r['tokens_per_s']:10.0f} {ratio:8.2f}x {r['mfu']:6.1%} {r['peak_gib']:9.1f}")


if __name__ == "__main__":
    main()
