"""Which tokens take part in the transport.

Special tokens ([CLS], [SEP], <s>, </s>) and a prompt prefix carry no translatable content,
so they are kept out of the plan; padding never takes part.

    >>> import torch
    >>> ids = torch.tensor([[0, 11, 12, 2, 1]])          # <s> a b </s> <pad>
    >>> real = torch.tensor([[1, 1, 1, 1, 0]])
    >>> ot_mask(ids, real, special_ids={0, 1, 2}, drop_special=True).int().tolist()
    [[0, 1, 1, 0, 0]]
"""

from __future__ import annotations

import torch


def special_token_mask(input_ids: torch.Tensor, special_ids: set[int]) -> torch.Tensor:
    """True where input_ids [B, n] holds a special token ([CLS], [SEP], <s>, </s>, pad)."""
    if not special_ids:
        return torch.zeros_like(input_ids, dtype=torch.bool)
    ids = torch.tensor(sorted(special_ids), device=input_ids.device)
    return torch.isin(input_ids, ids)


def ot_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: set[int], drop_special: bool,
            prefix_length: int = 0) -> torch.Tensor:
    """Tokens [B, n] (bool) that take part in OT: real, not special (optionally), not the
    `prefix_length` prompt tokens after the first. A row that would be empty keeps all its
    real tokens, so every row has mass to transport."""
    mask = attention_mask.bool()
    if drop_special:
        mask = mask & ~special_token_mask(input_ids, special_ids)
    if prefix_length:
        mask[:, 1:1 + prefix_length] = False
    empty = ~mask.any(1)
    if empty.any():
        mask[empty] = attention_mask.bool()[empty]
    return mask
