"""Bitext input: formats, malformed lines with line numbers, empty input."""

import json

import pytest

from optical.data.bitext import pairs_from_dataset, read_bitext, split_heldout
from optical.errors import OpticalError


def test_tsv_pairs(bitext_tsv):
    bitext = read_bitext(bitext_tsv)
    assert len(bitext.pairs) == 40 and bitext.bad == []
    assert bitext.pairs[0] == ("The cat sleeps on the warm bed.", "Con mèo ngủ trên giường ấm.")


def test_jsonl_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"en": f"hello {i}", "vi": f"xin chào {i}"}) for i in range(3)), "utf-8")
    assert read_bitext(path, lang="vi").pairs[2] == ("hello 2", "xin chào 2")


def test_malformed_lines_are_counted_with_line_numbers(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes("good one\tmột\nno tab here\n\tempty english\nfine\tổn\n".encode() + b"bad \xff utf8\tx\n")
    bitext = read_bitext(path)
    assert bitext.pairs == [("good one", "một"), ("fine", "ổn")]
    assert [n for n, _ in bitext.bad] == [2, 3, 5]
    assert "not valid UTF-8" in bitext.bad[2][1]
    assert "skipped 3 malformed line(s)" in bitext.summary()


def test_on_bad_line_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("ok\tok\nbroken\n", "utf-8")
    with pytest.raises(OpticalError, match=r"bad.tsv:2: no tab between the two sides"):
        read_bitext(path, on_bad_line="error")


@pytest.mark.parametrize("content", ["", "\n\n", "only\none\n"])
def test_empty_or_useless_input_is_an_error(tmp_path, content):
    path = tmp_path / "empty.tsv"
    path.write_text(content, "utf-8")
    with pytest.raises(OpticalError, match="no usable sentence pairs"):
        read_bitext(path)


def test_missing_file(tmp_path):
    with pytest.raises(OpticalError, match="bitext file not found"):
        read_bitext(tmp_path / "nope.tsv")


def test_dataset_rows_flat_and_translation_nested():
    rows = [{"translation": {"en": "a", "vi": "b"}}, {"en": "c", "vi": "d"}, {"en": "", "vi": "x"}]
    bitext = pairs_from_dataset(rows, "en", "vi")
    assert bitext.pairs == [("a", "b"), ("c", "d")] and len(bitext.bad) == 1


def test_heldout_split_is_seeded_and_disjoint():
    pairs = [(str(i), str(i)) for i in range(100)]
    train, held = split_heldout(pairs, 10, seed=1)
    assert len(held) == 10 and not set(train) & set(held)
    assert split_heldout(pairs, 10, seed=1) == (train, held)
