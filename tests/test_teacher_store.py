"""The teacher-state cache: one file per set of sentences, read back in any order."""

from __future__ import annotations

import torch

from optical.models.teacher import load_teacher
from optical.training.teacher_store import TeacherStore

SENTENCES = ["Open the file.", "Click OK.", "The cell range is empty.", "Click OK.", "Save the document as PDF."]


def _rows(store: TeacherStore, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = int(store.offsets[i]), int(store.offsets[i + 1])
    return store.tokens[a:b], store.input_ids[a:b]


def test_select_gives_each_sentence_its_own_rows(tiny_teacher_st):
    store = TeacherStore.build(load_teacher("sentence-transformers", str(tiny_teacher_st), max_length=32),
                               SENTENCES, batch_size=2, show_progress=False)
    picked = store.select([4, 0, 4, 2])
    assert len(picked) == 4 and int(picked.offsets[-1]) == len(picked.tokens) == len(picked.input_ids)
    for new, old in enumerate([4, 0, 4, 2]):
        for x, y in zip(_rows(picked, new), _rows(store, old)):
            assert torch.equal(x, y)
        assert torch.equal(picked.sentence[new], store.sentence[old])


def test_another_order_of_the_same_sentences_reads_the_same_cache(tmp_path, tiny_teacher_st):
    """A second seed's split (a permutation) hits the cache and gets every sentence's states in
    its own order; without a cache the states are the same."""
    teacher = load_teacher("sentence-transformers", str(tiny_teacher_st), max_length=32)
    first, cached = TeacherStore.cached(teacher, SENTENCES, tmp_path, show_progress=False)
    assert not cached and len(list((tmp_path / "teacher").iterdir())) == 1
    order = [3, 0, 4, 2, 1]
    second, cached = TeacherStore.cached(teacher, [SENTENCES[i] for i in order], tmp_path, show_progress=False)
    assert cached and len(list((tmp_path / "teacher").iterdir())) == 1
    uncached, _ = TeacherStore.cached(teacher, [SENTENCES[i] for i in order], None, show_progress=False)
    for new, old in enumerate(order):
        for x, y, z in zip(_rows(second, new), _rows(first, old), _rows(uncached, new)):
            assert torch.equal(x, y) and torch.equal(x, z)
        assert torch.equal(second.sentence[new], first.sentence[old])
    # and the states are the teacher's own (fp16 tokens)
    direct = teacher(teacher.tokenize([SENTENCES[2]]))
    torch.testing.assert_close(first.sentence[2], direct.sentence[0].float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_rows(first, 2)[0].float(), direct.token_states[0].float(), atol=2e-3, rtol=2e-3)
    # a different set of sentences is a different file
    TeacherStore.cached(teacher, SENTENCES[:3], tmp_path, show_progress=False)
    assert len(list((tmp_path / "teacher").iterdir())) == 2
