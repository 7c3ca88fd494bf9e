"""What every distillation loss receives: one batch of teacher and student states."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DistillBatch:
    """Teacher (English side) and student states for one batch of bitext pairs.

    | field | shape | meaning |
    |---|---|---|
    | teacher_tokens | [B, n, D] | teacher token states, frozen |
    | teacher_mask | [B, n] bool | real tokens that take part in token-level OT |
    | teacher_sentence | [B, D] | teacher sentence embedding |
    | student_tokens | [B, m, D] | student token states of the other language, projected to D |
    | student_mask | [B, m] bool | real student tokens |
    | student_sentence | [B, D] | student sentence embedding of the other language |
    | student_sentence_en | [B, D] / None | student sentence embedding of the English side |
    | student_tokens_en | [B, k, D] / None | student token states of the English side, projected to D |
    | student_mask_en | [B, k] bool / None | real student tokens of the English side |
    | student_masses_en | [B, k] / None | token masses of the English side, None = uniform |
    | teacher_masses | [B, n] / None | token masses (e.g. IDF), None = uniform |
    | student_masses | [B, m] / None | token masses, None = uniform |
    | teacher_image | [B, D] / None | image embedding of the pair's image (captions data) |
    """

    teacher_tokens: torch.Tensor
    teacher_mask: torch.Tensor
    teacher_sentence: torch.Tensor
    student_tokens: torch.Tensor
    student_mask: torch.Tensor
    student_sentence: torch.Tensor
    student_sentence_en: torch.Tensor | None = None
    student_tokens_en: torch.Tensor | None = None
    student_mask_en: torch.Tensor | None = None
    student_masses_en: torch.Tensor | None = None
    teacher_masses: torch.Tensor | None = None
    student_masses: torch.Tensor | None = None
    teacher_image: torch.Tensor | None = None
