"""In-batch contrastive (InfoNCE) loss between student and teacher sentence embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from optical.losses.base import DistillBatch


class InfoNCELoss(nn.Module):
    """Cross-entropy over cosine similarities / temperature, student [B, D] vs teacher [B, D].

    Row b of the [B, B] similarity matrix should peak at column b (its translation); the
    other pairs in the batch are the negatives. `symmetric=True` adds the teacher→student
    direction. Reference: van den Oord et al. 2018 (CPC); Radford et al. 2021 (CLIP).

    A student that matches every teacher row scores near zero; one that swaps two rows
    pays log-odds:

    >>> import torch
    >>> from optical.losses.base import DistillBatch
    >>> teacher = torch.eye(3)
    >>> def batch(student):
    ...     return DistillBatch(teacher_tokens=teacher[:, None], teacher_mask=torch.ones(3, 1, dtype=torch.bool),
    ...                         teacher_sentence=teacher, student_tokens=student[:, None],
    ...                         student_mask=torch.ones(3, 1, dtype=torch.bool), student_sentence=student)
    >>> loss = InfoNCELoss(temperature=0.05)
    >>> float(loss(batch(teacher))) < 1e-6, float(loss(batch(teacher[[1, 0, 2]]))) > 10
    (True, True)
    """

    def __init__(self, temperature: float = 0.05, symmetric: bool = True):
        super().__init__()
        self.temperature, self.symmetric = temperature, symmetric

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        student = F.normalize(batch.student_sentence.float(), dim=-1)
        teacher = F.normalize(batch.teacher_sentence.float(), dim=-1)
        logits = student @ teacher.T / self.temperature
        labels = torch.arange(len(logits), device=logits.device)
        loss = F.cross_entropy(logits, labels)
        if self.symmetric:
            loss = (loss + F.cross_entropy(logits.T, labels)) / 2
        return loss
