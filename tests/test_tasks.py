"""Task loaders: BEIR folders, ir_datasets-shaped sources (no network), bitext retrieval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest

from optical.data.tasks import (RetrievalTask, convert_ir_dataset, load_beir, load_bitext,
                                load_mmarco, load_task, load_wikiclir, write_beir)
from optical.errors import OpticalError


def write_folder(folder: Path, corpus=None, queries=None, qrels_lines=None, corpus_en=None) -> Path:
    corpus = corpus if corpus is not None else {"d1": ("Cats", "Con mèo ngủ."), "d2": ("", "Con chó chạy.")}
    queries = queries if queries is not None else {"q1": "the cat sleeps", "q2": "the dog runs", "q3": "extra"}
    qrels_lines = qrels_lines if qrels_lines is not None else ["q1\td1\t1", "q2\td2\t2"]
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": t, "text": x}, ensure_ascii=False) + "\n"
                for k, (t, x) in corpus.items()), encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(line + "\n" for line in qrels_lines), encoding="utf-8")
    if corpus_en is not None:
        (folder / "corpus_en.jsonl").write_text(
            "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in corpus_en.items()))
    return folder


def test_beir_folder_loads_titles_grades_and_unjudged(tmp_path):
    task = load_beir(write_folder(tmp_path / "toy"))
    assert task.name == "toy"
    assert task.corpus == {"d1": "Cats Con mèo ngủ.", "d2": "Con chó chạy."}
    assert task.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert set(task.queries) == {"q1", "q2"}
    assert task.unjudged == ["q3"]  # counted, not silently dropped
    assert task.corpus_en is None


def test_beir_corpus_en(tmp_path):
    task = load_beir(write_folder(tmp_path / "toy", corpus_en={"d1": "The cat sleeps.", "d2": "The dog runs."}))
    assert task.corpus_en == {"d1": "The cat sleeps.", "d2": "The dog runs."}
    with pytest.raises(OpticalError, match="corpus_en.jsonl.*'d2'"):
        load_beir(write_folder(tmp_path / "bad", corpus_en={"d1": "The cat sleeps."}))


@pytest.mark.parametrize("case, pattern", [
    ("unknown_query", r"test.tsv:3: unknown query id 'q9'"),
    ("unknown_doc", r"test.tsv:2: unknown corpus id 'd9'"),
    ("empty_corpus", r"corpus.jsonl: corpus is empty"),
    ("malformed", r"corpus.jsonl:2: invalid JSON"),
    ("missing_field", r"queries.jsonl:1: text: missing field"),
    ("no_judgments", r"test.tsv: no judged queries"),
    ("missing_file", r"qrels/test.tsv: file not found"),
])
def test_beir_bad_input_names_file_and_line(tmp_path, case, pattern):
    folder = write_folder(tmp_path / "toy")
    if case == "unknown_query":
        write_folder(folder, qrels_lines=["q1\td1\t1", "q9\td1\t1"])
    elif case == "unknown_doc":
        write_folder(folder, qrels_lines=["q1\td9\t1"])
    elif case == "empty_corpus":
        (folder / "corpus.jsonl").write_text("")
    elif case == "malformed":
        with (folder / "corpus.jsonl").open("a") as f:
            f.write('{"_id": "d3", "text": \n')
        lines = (folder / "corpus.jsonl").read_text().splitlines()
        (folder / "corpus.jsonl").write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    elif case == "missing_field":
        (folder / "queries.jsonl").write_text('{"_id": "q1"}\n')
    elif case == "no_judgments":
        write_folder(folder, qrels_lines=[])
    elif case == "missing_file":
        (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(OpticalError, match=pattern):
        load_beir(folder)


# ------------------------------------------------- ir_datasets-shaped fakes (no network)

class FakeDoc(NamedTuple):  # GenericDoc
    doc_id: str
    text: str

    def default_text(self):
        return self.text


class FakeWikiDoc(NamedTuple):  # WikiClirDoc
    doc_id: str
    title: str
    text: str

    def default_text(self):
        return f"{self.title} {self.text}"


class FakeQuery(NamedTuple):  # GenericQuery
    query_id: str
    text: str

    def default_text(self):
        return self.text


class FakeQrel(NamedTuple):  # TrecQrel
    query_id: str
    doc_id: str
    relevance: int
    iteration: str = "0"


class FakeDataset:
    def __init__(self, docs, queries, qrels):
        self.docs, self.queries, self.qrels = docs, queries, qrels

    def docs_iter(self):
        return iter(self.docs)

    def queries_iter(self):
        return iter(self.queries)

    def qrels_iter(self):
        return iter(self.qrels)

    def docs_store(self):
        docs = {d.doc_id: d for d in self.docs}
        return type("Store", (), {"get_many": staticmethod(lambda ids: {i: docs[i] for i in ids if i in docs})})()


def fake_mmarco(prefix="vi"):
    docs = [FakeDoc(str(i), f"{prefix} đoạn văn {i}") for i in range(200)]
    queries = [FakeQuery(f"q{i}", f"{prefix} câu hỏi {i}") for i in range(6)]
    # q5 is not judged; q0 has a judgment pointing outside the collection (dropped).
    qrels = [FakeQrel(f"q{i}", str(37 * i + 3), 1) for i in range(5)] + [FakeQrel("q0", "missing", 1)]
    return FakeDataset(docs, queries, qrels)


def test_convert_subsamples_but_keeps_judged_docs_seeded():
    data = fake_mmarco()
    queries, corpus, qrels = convert_ir_dataset(data.docs_iter(), data.queries_iter(), data.qrels_iter(),
                                                max_corpus=20, seed=7)
    judged = {d for docs in qrels.values() for d in docs}
    assert len(corpus) == 20 and judged <= set(corpus)
    assert set(queries) == {f"q{i}" for i in range(5)}
    assert qrels["q0"] == {"3": 1}
    again = convert_ir_dataset(data.docs_iter(), data.queries_iter(), data.qrels_iter(), max_corpus=20, seed=7)
    other = convert_ir_dataset(data.docs_iter(), data.queries_iter(), data.qrels_iter(), max_corpus=20, seed=8)
    assert again[1] == corpus and other[1] != corpus
    full = convert_ir_dataset(data.docs_iter(), data.queries_iter(), data.qrels_iter())
    assert len(full[1]) == 200
    tiny = convert_ir_dataset(data.docs_iter(), data.queries_iter(), data.qrels_iter(), max_corpus=2)
    assert set(tiny[1]) == judged  # judged documents win over the size limit


def test_mmarco_converts_caches_and_loads_as_beir(tmp_path):
    task = load_mmarco("vi", max_corpus=30, seed=1, cache_dir=tmp_path, dataset=fake_mmarco(),
                       english_dataset=fake_mmarco("en"), english_corpus=True)
    assert task.name == "mmarco.vi" and len(task.corpus) == 30 and len(task.qrels) == 5
    assert task.queries["q1"] == "vi câu hỏi 1"
    assert task.corpus_en["3"] == "en đoạn văn 3"
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and (folders[0] / "corpus.jsonl").is_file()
    # Second call reads the cache; a dataset that would fail proves it is not touched.
    again = load_mmarco("vi", max_corpus=30, seed=1, cache_dir=tmp_path, dataset=None, english_corpus=True)
    assert again.corpus == task.corpus
    english = load_mmarco("vi", max_corpus=30, seed=1, cache_dir=tmp_path, queries_lang="en",
                          dataset=fake_mmarco(), english_dataset=fake_mmarco("en"))
    assert english.queries["q1"] == "en câu hỏi 1" and english.corpus == task.corpus


def test_wikiclir_graded_qrels(tmp_path):
    docs = [FakeWikiDoc(str(i), f"Bài {i}", f"nội dung {i}") for i in range(50)]
    queries = [FakeQuery("a", "Cat"), FakeQuery("b", "Dog")]
    qrels = [FakeQrel("a", "4", 2), FakeQrel("a", "9", 1), FakeQrel("b", "11", 2)]
    task = load_wikiclir("vi", max_corpus=10, cache_dir=tmp_path, dataset=FakeDataset(docs, queries, qrels))
    assert task.name == "wikiclir.vi" and len(task.corpus) == 10
    assert task.qrels == {"a": {"4": 2, "9": 1}, "b": {"11": 2}}
    assert task.corpus["4"] == "Bài 4 nội dung 4"


def test_bitext_both_directions(bitext_tsv):
    forward, backward = load_bitext(bitext_tsv, lang="vi")
    assert forward.name == "bitext.en-vi" and backward.name == "bitext.vi-en"
    assert forward.queries["0"].startswith("The cat") and forward.corpus["0"].startswith("Con mèo")
    assert forward.qrels["0"] == {"0": 1} and backward.swap_encoders and not forward.swap_encoders
    assert len(forward.queries) == 40


def test_bitext_bad_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("one\ttwo\nno tab here\n", encoding="utf-8")
    with pytest.raises(OpticalError, match=r"pairs.tsv:2: expected 'english<TAB>other'"):
        load_bitext(path)


def test_registry_and_round_trip(tmp_path):
    with pytest.raises(OpticalError, match="unknown task 'nope'"):
        load_task("nope")
    with pytest.raises(OpticalError, match="--path"):
        load_task("beir")
    folder = write_beir(tmp_path / "rt", {"q": "hi"}, {"d": "xin chào"}, {"q": {"d": 1}}, corpus_en={"d": "hello"})
    [task] = load_task("beir", path=folder, split="test")
    assert isinstance(task, RetrievalTask) and task.corpus_en == {"d": "hello"}


def test_mmarco_from_hf_beir_layout(tmp_path):
    from optical.data.tasks import HFBeirSource

    tables = {("me/mm", "corpus", "corpus"): [{"_id": i, "title": "", "text": f"văn {i}"} for i in range(9)],
              ("me/mm", "queries", "queries"): [{"_id": "a", "text": "câu a"}, {"_id": "b", "text": "câu b"}],
              ("me/mm-qrels", None, "dev"): [{"query-id": "a", "corpus-id": 4, "score": 1}]}

    def fake_load(name, config=None, split=None):
        return tables[(name, config, split)]

    source = HFBeirSource("me/mm", split="dev", load_dataset=fake_load)
    task = load_mmarco("vi", split="dev", max_corpus=5, cache_dir=tmp_path, source="hf:me/mm", dataset=source)
    assert task.qrels == {"a": {"4": 1}} and len(task.corpus) == 5 and task.queries == {"a": "câu a"}
    with pytest.raises(OpticalError, match="cannot load"):
        list(HFBeirSource("me/none", load_dataset=fake_load).qrels_iter())
