"""Batched cost matrices between two sets of token states."""

from __future__ import annotations

import torch
import torch.nn.functional as F

COSTS = ("cosine", "sqeuclidean")


def cost_matrix(x: torch.Tensor, y: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Pairwise cost between every token of `x` and every token of `y`, per batch item.

    | arg | shape |
    |---|---|
    | x | [batch, n, dim] |
    | y | [batch, m, dim] |
    | returns | [batch, n, m] |

    `cosine`: 1 - cos(x_i, y_j), in [0, 2]. `sqeuclidean`: ||x_i - y_j||², computed from
    norms and one batched matmul (never materialises [batch, n, m, dim]) and clamped at 0
    because the expansion can go slightly negative in floating point.
    Padded positions get ordinary values; masses (not the cost) switch them off.
    """
    if kind == "cosine":
        return 1.0 - torch.bmm(F.normalize(x, dim=-1), F.normalize(y, dim=-1).transpose(1, 2))
    if kind == "sqeuclidean":
        sq = (x * x).sum(-1)[:, :, None] + (y * y).sum(-1)[:, None, :]
        return (sq - 2.0 * torch.bmm(x, y.transpose(1, 2))).clamp_min(0.0)
    raise ValueError(f"unknown cost {kind!r}; expected one of {COSTS}")
