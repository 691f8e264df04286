"""Comparing llama.cpp's logits with PEFT's: how the export round trip is measured."""

from __future__ import annotations

import numpy as np


def llama_cpp_logits(model: str, tokens: list[int], lora: str | None = None) -> np.ndarray:
    """llama.cpp's logits at every position of ``tokens`` (``model`` with ``lora`` applied)."""
    from llama_cpp import Llama

    llm = Llama(model, lora_path=lora, n_ctx=512, logits_all=True, verbose=False)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[:len(tokens)], dtype=np.float64)
    finally:
        llm.close()


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, mean per-position correlation) of two logits arrays."""
    top1 = float(np.mean(a.argmax(-1) == b.argmax(-1)))
    corr = float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)]))
    return top1, corr
