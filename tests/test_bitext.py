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
    bitext = read_bitext(path, max_bad_fraction=1.0)
    assert bitext.pairs == [("good one", "một"), ("fine", "ổn")]
    assert [n for n, _ in bitext.bad] == [2, 3, 5]
    assert "not valid UTF-8" in bitext.bad[2][1]
    assert "skipped 3 malformed line(s)" in bitext.summary()
    # the summary counts each reason
    assert bitext.bad_counts() == {"no tab between the two sides": 1, "empty side": 1, "not valid UTF-8": 1}
    assert "1 no tab between the two sides" in bitext.summary() and "1 not valid UTF-8" in bitext.summary()


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


def good_lines(n):
    return "".join(f"sentence {i}\tcâu {i}\n" for i in range(n))


def test_too_many_bad_lines_stop_the_read_in_one_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text(good_lines(94) + "no tab\n" * 6, "utf-8")  # 6 % malformed
    with pytest.raises(OpticalError) as err:
        read_bitext(path)
    message = str(err.value)
    assert "\n" not in message and "6 of 100 lines malformed" in message and "bitext.max_bad_fraction=0.05" in message
    assert "line 95: no tab" in message
    assert len(read_bitext(path, max_bad_fraction=0.1).bad) == 6
    path.write_text(good_lines(95) + "no tab\n" * 5, "utf-8")  # exactly 5 %: allowed
    assert len(read_bitext(path).pairs) == 95


def test_bad_fraction_is_a_recipe_key():
    from optical.recipe import recipe_from_dict

    assert recipe_from_dict({}, ["bitext.max_bad_fraction=0.2"]).bitext.max_bad_fraction == 0.2
    with pytest.raises(OpticalError, match="bitext.max_bad_fraction: must be in"):
        recipe_from_dict({}, ["bitext.max_bad_fraction=1.5"])


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_file_is_refused_in_one_line(tmp_path, encoding):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(good_lines(20).encode(encoding))
    with pytest.raises(OpticalError, match="UTF-16|NUL bytes") as err:
        read_bitext(path)
    assert "\n" not in str(err.value) and "save it as UTF-8" in str(err.value)


def test_utf8_bom_is_removed_and_said(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + good_lines(3).encode())
    bitext = read_bitext(path)
    assert bitext.pairs[0] == ("sentence 0", "câu 0") and not bitext.bad
    assert "byte-order mark" in bitext.summary()


def test_nul_inside_a_line_is_a_bad_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(good_lines(3).encode() + b"a\x00b\tc\n")
    bitext = read_bitext(path, max_bad_fraction=1.0)
    assert bitext.bad == [(4, "NUL byte in the line")] and len(bitext.pairs) == 3
    with pytest.raises(OpticalError, match=r"pairs.tsv:4: NUL byte in the line"):
        read_bitext(path, on_bad_line="error")


def test_escaped_nul_in_jsonl_is_a_bad_line(tmp_path):
    """Found by the fuzz profile: a JSON \\u0000 escape put a NUL into a read pair."""
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"en": "a cat", "vi": "con meo"}\n{"en": "\\u0000", "vi": "!"}\n', "utf-8")
    bitext = read_bitext(path, max_bad_fraction=1.0)
    assert bitext.pairs == [("a cat", "con meo")] and bitext.bad == [(2, "NUL character (\\u0000) in a value")]
    with pytest.raises(OpticalError, match=r"pairs.jsonl:2: NUL character \(\\u0000\) in a value"):
        read_bitext(path, on_bad_line="error")


@pytest.mark.parametrize("header", ["en\tvi", "english\tvietnamese", "EN\tVI", "source\ttarget"])
def test_header_row_is_skipped_and_said(tmp_path, header):
    path = tmp_path / "pairs.tsv"
    path.write_text(header + "\n" + good_lines(3), "utf-8")
    bitext = read_bitext(path, on_bad_line="error")
    assert bitext.pairs == [(f"sentence {i}", f"câu {i}") for i in range(3)]
    assert "skipped header row on line 1" in bitext.summary()


def test_a_first_pair_is_not_taken_for_a_header(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("English is hard\tTiếng Anh khó\n" + good_lines(2), "utf-8")
    assert read_bitext(path).pairs[0] == ("English is hard", "Tiếng Anh khó")


def test_heavy_duplication_warns_but_reads(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text(good_lines(2) + "same\tgiống\n" * 8, "utf-8")
    bitext = read_bitext(path)
    assert len(bitext.pairs) == 10 and "warning: 7 of 10 pairs are duplicates" in bitext.summary()
    path.write_text(good_lines(10), "utf-8")
    assert "duplicates" not in read_bitext(path).summary()
