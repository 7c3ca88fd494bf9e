"""Token masses: how much each token weighs in the transport problem."""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

import torch


def uniform_masses(mask: torch.Tensor) -> torch.Tensor:
    """Equal mass on every real token, zero on padding; each row sums to 1.

    mask: [batch, n] bool → masses: [batch, n] float32.
    """
    m = mask.float()
    return m / m.sum(-1, keepdim=True).clamp_min(1.0)


def document_frequencies(token_id_lists: Iterable[Sequence[int]]) -> tuple[Counter, int]:
    """Count in how many sentences each token id occurs. Returns (df, n_sentences)."""
    df: Counter = Counter()
    n = 0
    for ids in token_id_lists:
        df.update(set(ids))
        n += 1
    return df, n


def idf_table(df: Counter, n_sentences: int, vocab_size: int) -> torch.Tensor:
    """Smoothed IDF per token id, log((N + 1) / (df + 1)) + 1: [vocab_size] float32.

    Unseen ids get the largest value (rare is informative), and no id gets zero mass.
    """
    table = torch.full((vocab_size,), math.log(n_sentences + 1.0) + 1.0)
    for token_id, count in df.items():
        if 0 <= token_id < vocab_size:
            table[token_id] = math.log((n_sentences + 1.0) / (count + 1.0)) + 1.0
    return table


def idf_masses(input_ids: torch.Tensor, mask: torch.Tensor, idf: torch.Tensor) -> torch.Tensor:
    """IDF-weighted masses: rare tokens weigh more, padding weighs zero; rows sum to 1.

    input_ids: [batch, n] long, mask: [batch, n] bool, idf: [vocab] → [batch, n] float32.
    """
    weights = idf.to(input_ids.device)[input_ids] * mask.float()
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
