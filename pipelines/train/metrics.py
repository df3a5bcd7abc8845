"""Scores of generated replies against references, and the side-by-side comparison of two evaluations.

BLEU and chrF come from sacrebleu (corpus level, its default tokenisation: the figures match what papers
report), ROUGE-1/2/L from rouge-score (mean F1 over replies). ``evaluate.load()`` would fetch this same code
from the Hub at run time and fails offline, so the libraries are called directly. rouge-score's default
tokenizer keeps only ASCII letters and digits, which scores any non-Latin reply 0; a Unicode word tokenizer
replaces it.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

# Metric -> True when higher is better. The order is the order of the printed table.
DIRECTION: dict[str, bool] = {
    "perplexity": False,
    "loss": False,
    "bleu": True,
    "chrf": True,
    "rouge1": True,
    "rouge2": True,
    "rougeL": True,
    "stop_rate": True,
    "probe_pass_rate": True,
    "reply_tokens": True,  # informative only: neither longer nor shorter is better by itself
}
INFORMATIVE = {"reply_tokens", "loss", "probes"}  # shown with deltas, never a verdict (loss repeats perplexity)


class _WordTokenizer:
    """Lower-cased Unicode words (rouge-score's tokenizer protocol)."""

    _word = re.compile(r"\w+")

    def tokenize(self, text: str) -> list[str]:
        return self._word.findall(text.lower())


def text_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """BLEU, chrF (0-100) and ROUGE-1/2/L F1 (0-1) of replies against their references."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in number")
    if not predictions:
        return {}
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_WordTokenizer())
    rouge = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for p, r in zip(predictions, references):
        for key, score in scorer.score(r, p).items():
            rouge[key] += score.fmeasure / len(predictions)
    return {"bleu": sacrebleu.corpus_bleu(predictions, [references]).score,
            "chrf": sacrebleu.corpus_chrf(predictions, [references]).score,
            **rouge}


def perplexity(nll_sum: float, tokens: int) -> tuple[float, float]:
    """(mean loss, perplexity) from a summed negative log-likelihood; overflow reads as infinity."""
    if tokens == 0:
        raise ValueError("no assistant tokens to score")
    loss = nll_sum / tokens
    return loss, (math.exp(loss) if loss < 700 else math.inf)


@dataclass(frozen=True)
class Row:
    metric: str
    candidate: float | None
    reference: float | None
    delta: float | None
    better: bool | None  # None: informative metric, or a value missing

    def to_dict(self) -> dict:
        return asdict(self)


def compare(candidate: dict[str, float], reference: dict[str, float]) -> list[Row]:
    """One row per metric either side has, in table order, with the delta and whether the candidate is better
    (strictly; ties are not better)."""
    names = [m for m in DIRECTION if m in candidate or m in reference]
    names += sorted((set(candidate) | set(reference)) - set(names))
    rows = []
    for m in names:
        c, r = candidate.get(m), reference.get(m)
        delta = None if c is None or r is None else c - r
        better = None
        if delta is not None and m in DIRECTION and m not in INFORMATIVE:
            better = delta > 0 if DIRECTION[m] else delta < 0
        rows.append(Row(m, c, r, delta, better))
    return rows
