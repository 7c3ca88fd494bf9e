"""Sentence-level MSE distillation (Reimers & Gurevych 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from optical.losses.base import DistillBatch


class SentenceMSELoss(nn.Module):
    """MSE between student and teacher sentence embeddings, [B, D] each.

    The student embedding of the other language is pulled to the teacher's embedding of
    the English side; with `english=True` the student's embedding of the English side is
    pulled there too, which keeps the student's English usable (as in Reimers & Gurevych,
    "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation",
    EMNLP 2020).

    >>> import torch
    >>> from optical.losses.base import DistillBatch
    >>> teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> batch = DistillBatch(teacher_tokens=teacher[:, None], teacher_mask=torch.ones(2, 1, dtype=torch.bool),
    ...                      teacher_sentence=teacher, student_tokens=teacher[:, None],
    ...                      student_mask=torch.ones(2, 1, dtype=torch.bool), student_sentence=teacher * 0.5,
    ...                      student_sentence_en=teacher)
    >>> SentenceMSELoss()(batch)        # (0.5² + 0²) / 2 for the other side, 0 for the English side
    tensor(0.1250)
    """

    def __init__(self, english: bool = True):
        super().__init__()
        self.english = english

    def forward(self, batch: DistillBatch) -> torch.Tensor:
        target = batch.teacher_sentence.float()
        loss = F.mse_loss(batch.student_sentence.float(), target)
        if self.english and batch.student_sentence_en is not None:
            loss = loss + F.mse_loss(batch.student_sentence_en.float(), target)
        return loss
