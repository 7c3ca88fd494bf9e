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
