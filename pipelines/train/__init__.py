"""Training and evaluation: ``training`` (a LoRA/QLoRA run that registers a candidate), ``evaluation`` (scores
beside production), with ``collate`` (tokens, loss masks, packing), ``modeling`` (loading models with errors a
person can act on), ``metrics`` and ``callbacks``. Nothing is imported here: the extra's libraries load only
when a step runs."""
