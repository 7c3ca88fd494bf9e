"""Progress checks during training: the student on held-out pairs of the bitext."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def heldout_metrics(student, pairs: list[tuple[str, str]], teacher_sentences: torch.Tensor,
                    batch_size: int = 64) -> dict[str, float]:
    """Translation retrieval accuracy@1 both ways, the OPTICAL setting (teacher English query →
    student document), and sentence MSE / cosine to the teacher, on held-out `pairs`
    ([(english, other)]) with the teacher's English embeddings `teacher_sentences` [N, D].
    The student's train/eval mode is left as it was."""
    if not pairs:
        return {}
    was_training = student.training
    student.eval()
    device = student.head.weight.device
    other_raw, english_raw = [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        for texts, out in (([p[1] for p in chunk], other_raw), ([p[0] for p in chunk], english_raw)):
            features = {k: v.to(device) for k, v in student.tokenize(texts).items()}
            out.append(student(features)[1].float().cpu())
    student.train(was_training)
    other, english = torch.cat(other_raw), torch.cat(english_raw)
    teacher = teacher_sentences.float().cpu()
    target = torch.arange(len(pairs))

    def accuracy(queries, docs):
        scores = F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T
        return float((scores.argmax(1) == target).float().mean())

    return {
        "acc_other_to_en": accuracy(other, english),
        "acc_en_to_other": accuracy(english, other),
        "acc_teacher_en_to_other": accuracy(teacher, other),
        "mse_to_teacher": float(F.mse_loss(other, teacher)),
        "cosine_to_teacher": float(F.cosine_similarity(other, teacher, dim=-1).mean()),
    }
