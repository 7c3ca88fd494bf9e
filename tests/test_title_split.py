"""experiments.title_split: which queries count as untranslated, the per-split means averaged
over seeds, the paired difference against the first label, and clear errors for bad input."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments import title_split
from optical.errors import OpticalError


def write_clir(folder):
    """q-same: the page kept its English title; q-strip: the same once trimmed; q-other: translated."""
    (folder / "qrels").mkdir(parents=True)
    corpus = [("d-same", "Open a File", "Open a File Mở một tệp"),
              ("d-strip", "Print ", "Print In tài liệu"),
              ("d-other", "Lưu tệp", "Lưu tệp bằng định dạng khác"),
              ("d-none", "Open a File", "an unjudged page with the same title")]
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for doc, title, text in corpus:
            handle.write(json.dumps({"_id": doc, "title": title, "text": text}, ensure_ascii=False) + "\n")
    queries = [("q-same", "Open a File"), ("q-strip", "Print"), ("q-other", "Save a File")]
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for qid, text in queries:
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq-same\td-same\t2\nq-strip\td-strip\t1\nq-other\td-other\t2\n")
    return folder


def write_scores(folder, values, task="clir"):
    folder.mkdir(parents=True)
    (folder / "per_query.json").write_text(json.dumps({task: {"nDCG@10": values}}))
    return folder


def test_untranslated_queries_are_those_whose_relevant_page_has_the_query_as_title(tmp_path):
    clir = write_clir(tmp_path / "clir")
    assert title_split.untranslated_queries(clir) == {"q-same", "q-strip"}


def test_table_averages_seeds_per_split_and_differences_against_the_first(tmp_path):
    clir = write_clir(tmp_path / "clir")
    base = title_split.Runs("base", [write_scores(tmp_path / "a1", {"q-same": 1.0, "q-strip": 0.5, "q-other": 0.2}),
                                     write_scores(tmp_path / "a2", {"q-same": 0.5, "q-strip": 0.5, "q-other": 0.4})])
    other = title_split.Runs("other", [write_scores(tmp_path / "b1", {"q-same": 0.25, "q-strip": 0.25, "q-other": 0.9})])
    table = title_split.split_table(clir, [base, other], rounds=100)
    lines = table.splitlines()
    assert lines[0] == "| nDCG@10 | seeds | untranslated (2) | translated (1) | all (3) |"
    # base: untranslated mean of (0.75, 0.5), translated 0.3, all (0.75 + 0.5 + 0.3) / 3
    assert lines[2] == "| base | 2 | 0.625 | 0.300 | 0.517 |"
    assert lines[3].startswith("| other | 1 | 0.250 (-37.5, p ")
    assert "| 0.900 (+60.0) |" in lines[3]   # a single query: a difference, no test


def test_another_task_of_the_same_folder(tmp_path):
    clir = write_clir(tmp_path / "clir")
    bounds = tmp_path / "bounds"
    bounds.mkdir()
    (bounds / "per_query.json").write_text(json.dumps({
        "clir": {"nDCG@10": {"q-same": 1.0, "q-strip": 1.0, "q-other": 0.0}},
        "clir[en]": {"nDCG@10": {"q-same": 1.0, "q-strip": 1.0, "q-other": 1.0}}}))
    label, pattern, task = title_split.parse_runs(f"upper={bounds}#clir[en]")
    table = title_split.split_table(clir, [title_split.Runs(label, [bounds], task)])
    assert table.splitlines()[2] == "| upper | 1 | 1.000 | 1.000 | 1.000 |"


def test_a_missing_task_names_the_file(tmp_path):
    clir = write_clir(tmp_path / "clir")
    run = write_scores(tmp_path / "run", {"q-same": 1.0}, task="other")
    with pytest.raises(OpticalError, match=r"run/per_query.json: no clir.nDCG@10"):
        title_split.split_table(clir, [title_split.Runs("x", [run])])


def test_main_reports_bad_input_in_one_line(tmp_path, capsys):
    clir = write_clir(tmp_path / "clir")
    assert title_split.main([str(clir), "no-equals-sign"]) == 2
    assert capsys.readouterr().err.strip() == "error: 'no-equals-sign': expected LABEL=PATTERN or LABEL=PATTERN#TASK"
    assert title_split.main([str(clir), f"x={tmp_path}/nothing-*"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: x: no folder matches") and "\n" not in err
    assert title_split.main([str(tmp_path / "missing"), f"x={tmp_path}"]) == 2
    assert "BEIR folder not found" in capsys.readouterr().err


@given(st.text(max_size=40))
def test_parse_runs_returns_a_full_spec_or_a_clear_error(spec):
    try:
        label, pattern, task = title_split.parse_runs(spec)
    except OpticalError as err:
        assert "expected LABEL=PATTERN" in str(err)
        return
    assert label and pattern and task
    assert "=" not in label and spec.strip().startswith(label)


@given(st.text(alphabet=st.characters(blacklist_characters="=#", blacklist_categories=("Cs",)), min_size=1),
       st.text(alphabet=st.characters(blacklist_characters="#", blacklist_categories=("Cs",)), min_size=1),
       st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_parse_runs_round_trips(label, pattern, task):
    if not label.strip() or not pattern.strip():
        return
    assert title_split.parse_runs(f"{label}={pattern}#{task}") == (label.strip(), pattern.strip(), task.strip() or "clir")
