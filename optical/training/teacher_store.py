"""Teacher outputs for the English side, computed once and cached on disk.

The teacher is frozen, so its token states for a sentence never change: later epochs and
later runs with the same teacher, data and max length read them from a safetensors file
instead of running the teacher again.

On disk (`<cache>/teacher/<key>.safetensors`):

| tensor | shape | meaning |
|---|---|---|
| tokens | [total_tokens, D] fp16 | every sentence's token states, concatenated |
| input_ids | [total_tokens] int64 | their token ids (for masks and IDF masses) |
| offsets | [N + 1] int64 | sentence i owns rows offsets[i]:offsets[i+1] |
| sentence | [N, D] fp32 | sentence embeddings |
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from optical.files import atomic_file, cache_key
from optical.models.teacher import Teacher, TeacherOutput


def store_key(teacher: Teacher, sentences: list[str]) -> str:
    """Cache name of the teacher's states for `sentences`: the teacher's fingerprint (model,
    max length, layer) and every sentence."""
    return cache_key(teacher.fingerprint(), sentences)


class TeacherStore:
    """Teacher outputs for a fixed list of sentences, addressable by sentence index."""

    def __init__(self, tokens: torch.Tensor, input_ids: torch.Tensor, offsets: torch.Tensor, sentence: torch.Tensor):
        self.tokens, self.input_ids, self.offsets, self.sentence = tokens, input_ids, offsets, sentence

    def __len__(self) -> int:
        return len(self.sentence)

    @classmethod
    @torch.no_grad()
    def build(cls, teacher: Teacher, sentences: list[str], batch_size: int = 64,
              show_progress: bool = True) -> "TeacherStore":
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))  # less padding
        per_tokens: list = [None] * len(sentences)
        per_ids: list = [None] * len(sentences)
        sentence_out = None
        for start in tqdm(range(0, len(order), batch_size), disable=not show_progress, desc="teacher states"):
            idx = order[start:start + batch_size]
            out = teacher(teacher.tokenize([sentences[i] for i in idx]))
            if sentence_out is None:
                sentence_out = torch.zeros(len(sentences), out.sentence.shape[-1])
            sentence_out[idx] = out.sentence.float().cpu()
            lengths = out.attention_mask.sum(1).tolist()
            for row, i in enumerate(idx):
                per_tokens[i] = out.token_states[row, : lengths[row]].to(torch.float16).cpu()
                per_ids[i] = out.input_ids[row, : lengths[row]].cpu()
        offsets = torch.zeros(len(sentences) + 1, dtype=torch.long)
        offsets[1:] = torch.tensor([len(t) for t in per_ids]).cumsum(0)
        return cls(torch.cat(per_tokens), torch.cat(per_ids).long(), offsets, sentence_out)

    def save(self, path: Path) -> None:
        """Atomic (see optical.files): a killed run never leaves a truncated store."""
        with atomic_file(path) as tmp:
            save_file({"tokens": self.tokens.contiguous(), "input_ids": self.input_ids.contiguous(),
                       "offsets": self.offsets.contiguous(), "sentence": self.sentence.contiguous()}, str(tmp))

    @classmethod
    def load(cls, path: Path) -> "TeacherStore":
        data = load_file(str(path))
        return cls(data["tokens"], data["input_ids"], data["offsets"], data["sentence"])

    @classmethod
    def cached(cls, teacher: Teacher, sentences: list[str], cache_dir: Path | None, batch_size: int = 64,
               show_progress: bool = True) -> tuple["TeacherStore", bool]:
        """Load from `cache_dir` when present, else build (and save when `cache_dir` is set).
        Returns (store, was_cached), the store in the order of `sentences`.

        The file holds the distinct sentences in sorted order: another seed's split of the
        same bitext (the same sentences in another order) reads the same file instead of
        running the teacher again, and a run computes the same states with or without a cache."""
        distinct = sorted(set(sentences))
        path = cache_dir / "teacher" / f"{store_key(teacher, distinct)}.safetensors" if cache_dir else None
        was_cached = path is not None and path.is_file()
        store = cls.load(path) if was_cached else cls.build(teacher, distinct, batch_size, show_progress)
        if path is not None and not was_cached:
            store.save(path)
        position = {sentence: i for i, sentence in enumerate(distinct)}
        return store.select([position[s] for s in sentences]), was_cached

    def select(self, indices: list[int]) -> TeacherStore:
        """The store of sentences `indices`, in that order (repeats allowed).

        >>> store.select([2, 0]).sentence.shape   # [2, D]: sentence 2, then sentence 0
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        starts, lengths = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]
        offsets = torch.zeros(len(idx) + 1, dtype=torch.long)
        offsets[1:] = lengths.cumsum(0)
        # token row t of new sentence j is old row starts[j] + (t - offsets[j])
        rows = torch.arange(int(offsets[-1])) + torch.repeat_interleave(starts - offsets[:-1], lengths)
        return TeacherStore(self.tokens[rows], self.input_ids[rows], offsets, self.sentence[idx])

    def batch(self, indices: list[int], device: torch.device | str = "cpu") -> TeacherOutput:
        """Padded TeacherOutput for sentences `indices`: tokens [B, n, D] (fp32)."""
        lengths = [int(self.offsets[i + 1] - self.offsets[i]) for i in indices]
        n, dim = max(lengths), self.tokens.shape[1]
        tokens = torch.zeros(len(indices), n, dim)
        ids = torch.zeros(len(indices), n, dtype=torch.long)
        mask = torch.zeros(len(indices), n, dtype=torch.bool)
        for row, (i, length) in enumerate(zip(indices, lengths)):
            start = int(self.offsets[i])
            tokens[row, :length] = self.tokens[start:start + length].float()
            ids[row, :length] = self.input_ids[start:start + length]
            mask[row, :length] = True
        return TeacherOutput(tokens.to(device), mask.to(device), self.sentence[indices].to(device), ids.to(device))
