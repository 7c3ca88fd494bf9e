"""Passages (--passages WINDOW:STRIDE:AGG): parser, splitting, MaxP/mean/FirstP vs brute force, CLI."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from optical.cli import app
from optical.errors import OpticalError
from optical.eval.retrieval import retrieve
from optical.eval.passages import (AGGREGATIONS, MAX_TOKENS, PassageSpec, parse_passages, split_corpus,
                              split_text, split_texts, tokenizer_of, with_max_length)
from test_evaluate import PAIRS, beir_folder, run_dir  # noqa: F401  (fixtures: toy BEIR folder, tiny run)

runner = CliRunner()


# --------------------------------------------------------------------------------- parser

_field = st.one_of(st.integers(-3, 2 * MAX_TOKENS).map(str), st.text(max_size=4),
                   st.sampled_from(["", " 8", "1e3", "+4", "0x10", "4.0", "١٢", "9" * 5000]))
_agg = st.one_of(st.sampled_from(AGGREGATIONS + ("MAX", "median", "", " max ")), st.text(max_size=5))
_spec_like = st.builds(lambda w, s, a, sep, tail: sep.join([w, s, a]) + tail, _field, _field, _agg,
                       st.sampled_from([":", ":", ":", "::", ",", " : "]), st.sampled_from(["", "", ":", ":x"]))
_near_valid = st.builds("{}:{}:{}".format,
                        st.one_of(st.integers(0, 40), st.integers(MAX_TOKENS - 2, MAX_TOKENS + 2)),
                        st.integers(0, 40), st.sampled_from(AGGREGATIONS + ("median",)))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), _spec_like, _near_valid))
@example("64:32:max")
@example("9" * 5000 + ":1:max")  # int() refuses > 4300 digits with ValueError
@example("١٢:1:max")  # non-ASCII digits int() would accept
def test_parser_parses_or_raises_one_line_error(text):
    try:
        spec = parse_passages(text)
    except OpticalError as err:
        assert "\n" not in str(err) and str(err).startswith("--passages ")
    else:
        assert isinstance(spec, PassageSpec) and spec.agg in AGGREGATIONS
        assert 1 <= spec.stride <= spec.window <= MAX_TOKENS
        assert parse_passages(str(spec)) == spec


@pytest.mark.parametrize("text, expected", [("64:32:max", (64, 32, "max")), ("1:1:first", (1, 1, "first")),
                                            (" 8 : 4 : mean ", (8, 4, "mean"))])
def test_parser_valid(text, expected):
    spec = parse_passages(text)
    assert (spec.window, spec.stride, spec.agg) == expected and str(spec) == ":".join(map(str, expected))
    assert parse_passages(None) is None and parse_passages(spec) is spec


@pytest.mark.parametrize("text, pattern", [
    ("64:32", "WINDOW:STRIDE:AGG"), ("64:32:max:1", "WINDOW:STRIDE:AGG"), ("", "WINDOW:STRIDE:AGG"),
    ("a:32:max", "WINDOW must be an integer"), ("0:1:max", "WINDOW must be"), ("4:0:max", "STRIDE must be"),
    ("-4:2:max", "WINDOW must be"), ("4:8:max", "STRIDE 8 > WINDOW 4"), ("4:2:median", "AGG must be one of"),
    ("99999999:1:max", "WINDOW must be"),
])
def test_parser_errors(text, pattern):
    with pytest.raises(OpticalError, match=pattern):
        parse_passages(text)


def test_parser_rejects_non_strings():
    with pytest.raises(OpticalError, match="not a string"):
        parse_passages(64)


# ------------------------------------------------------------------------------- splitting

def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_windows_and_stride_on_words():
    assert split_text(_words(10), 4, 2) == ["w0 w1 w2 w3", "w2 w3 w4 w5", "w4 w5 w6 w7", "w6 w7 w8 w9"]
    assert split_text(_words(10), 4, 4) == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]
    assert split_text("  short   doc ", 4, 2) == ["short   doc"]  # ≤ WINDOW: one passage, the doc itself
    assert split_text("", 4, 2) == [""] and split_text("   ", 4, 2) == [""]  # blank stays one (blank) passage
    assert split_texts(["a  b\n c d", "e"], 2, 1) == [["a  b", "b\n c", "c d"], ["e"]]  # original substrings


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 60), window=st.integers(1, 12), stride=st.integers(1, 12))
def test_windows_cover_every_word_once_started(n, window, stride):
    stride = min(stride, window)
    passages = split_text(_words(n), window, stride)
    if n <= window:
        assert passages == [_words(n)]
        return
    assert len(passages) == 1 + math.ceil((n - window) / stride)
    starts = [int(p.split()[0][1:]) for p in passages]
    assert starts == [i * stride for i in range(len(passages))]
    assert all(p and len(p.split()) <= window for p in passages)
    assert all(len(p.split()) == window for p in passages[:-1]) and passages[-1].split()[-1] == f"w{n - 1}"


def test_split_with_the_model_tokenizer(tiny_teacher_st):
    from optical.eval.encoders import SentenceTransformerEncoder

    encoder = SentenceTransformerEncoder(str(tiny_teacher_st))
    tokenizer = tokenizer_of(encoder)
    assert tokenizer is encoder.model.tokenizer
    doc = " ".join(vi for _, vi in PAIRS[:3])
    n = len(tokenizer(doc, add_special_tokens=False)["input_ids"])
    passages = split_text(doc, 8, 4, tokenizer)
    assert len(passages) == 1 + math.ceil((n - 8) / 4) and len(passages) > 3
    assert all(p and p in doc for p in passages)  # original substrings (accents and case kept)
    assert doc.startswith(passages[0]) and doc.endswith(passages[-1])
    assert all(len(tokenizer(p, add_special_tokens=False)["input_ids"]) <= 8 for p in passages)
    assert split_text("Con mèo ngủ.", 8, 4, tokenizer) == ["Con mèo ngủ."]


class SlowTokenizer:
    """No offsets (``is_fast`` False): windows are decoded from token ids."""

    is_fast = False

    def __call__(self, text, **kwargs):
        return {"input_ids": [len(w) for w in text.split()]}

    def decode(self, ids):
        return " ".join("x" * i for i in ids)


def test_slow_tokenizer_decodes_windows():
    assert split_text("a bb ccc dddd", 2, 1, SlowTokenizer()) == ["x xx", "xx xxx", "xxx xxxx"]
    assert split_text("a bb", 2, 1, SlowTokenizer()) == ["a bb"]


# --------------------------------------------------------------- aggregation vs brute force

VOCAB = [f"v{i}" for i in range(300)]  # large enough that no two documents share a window (no ties)


def _word_vector(word: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=16)


class BagOfWordsEncoder:
    """Deterministic: a text is the sum of its words' seeded random vectors (no tokenizer)."""

    def __init__(self, identity: str = "bow@1"):
        self.name, self.identity, self.role, self.calls = "bow", identity, "document", 0

    def encode(self, texts, batch_size=64, show_progress=False):
        self.calls += 1
        return np.array([sum((_word_vector(w) for w in t.split()), np.full(16, 1e-3)) for t in texts],
                        dtype=np.float32)


def _corpus(seed: int = 0, n_docs: int = 30) -> tuple[dict[str, str], dict[str, str]]:
    rng = np.random.default_rng(seed)
    corpus = {f"d{i}": " ".join(rng.choice(VOCAB, size=rng.integers(1, 20))) for i in range(n_docs)}
    corpus["long"] = "apple banana " * 40  # 40 windows of 3 words: they fill the top hits of "apple banana"
    queries = {f"q{i}": " ".join(rng.choice(VOCAB, size=rng.integers(1, 4))) for i in range(12)}
    queries["qa"] = "apple banana"
    return queries, corpus


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _brute_force(queries, corpus, encoder, window, stride, agg, k):
    """Independent of optical.eval.passages: whitespace windows built by hand, every score computed."""
    query_vectors = _normalise(encoder.encode(list(queries.values())))
    doc_scores = []
    for text in corpus.values():
        words, start, windows = text.split(), 0, []
        while True:
            windows.append(" ".join(words[start:start + window]))
            if start + window >= len(words):
                break
            start += stride
        vectors = _normalise(encoder.encode(windows))
        if agg == "max":
            doc_scores.append((query_vectors @ vectors.T).max(axis=1))
        elif agg == "mean":
            doc_scores.append(query_vectors @ _normalise(vectors.mean(axis=0)))
        else:
            doc_scores.append(query_vectors @ vectors[0])
    scores = np.stack(doc_scores, axis=1)
    doc_ids = list(corpus)
    return {qid: {doc_ids[j]: float(row[j]) for j in np.argsort(-row)[:k]} for qid, row in zip(queries, scores)}


def _assert_same_run(run, expected):
    assert set(run) == set(expected)
    for qid in expected:
        assert set(run[qid]) == set(expected[qid]), qid
        for doc, value in expected[qid].items():
            assert run[qid][doc] == pytest.approx(value, abs=1e-5)


@pytest.mark.parametrize("agg", AGGREGATIONS)
@pytest.mark.parametrize("window, stride, k", [(3, 2, 5), (4, 4, 3), (5, 1, 8), (50, 10, 4)])
def test_aggregation_equals_brute_force(tmp_path, agg, window, stride, k):
    queries, corpus = _corpus(seed=window * 10 + stride)
    run = retrieve(queries, corpus, BagOfWordsEncoder(), BagOfWordsEncoder(), k, cache_dir=tmp_path,
                   passages=f"{window}:{stride}:{agg}")
    _assert_same_run(run, _brute_force(queries, corpus, BagOfWordsEncoder(), window, stride, agg, k))


def test_maxp_searches_deeper_until_k_documents(tmp_path, monkeypatch):
    import optical.eval.index

    depths = []
    real = optical.eval.index.search
    monkeypatch.setattr(optical.eval.index, "search", lambda index, q, k: depths.append(k) or real(index, q, k))
    queries, corpus = _corpus()
    run = retrieve({"qa": "apple banana"}, corpus, BagOfWordsEncoder(), BagOfWordsEncoder(), 5,
                   passages="3:2:max")
    assert len(depths) > 1 and depths == sorted(depths)  # the long document's windows fill the first hits
    assert len(run["qa"]) == 5
    _assert_same_run(run, _brute_force({"qa": "apple banana"}, corpus, BagOfWordsEncoder(), 3, 2, "max", 5))


def test_cached_index_per_aggregation(tmp_path):
    """A trained (ivf) index is cached per spec: mean's document index never serves max."""
    queries, corpus = _corpus(seed=3)
    for agg in ("max", "mean", "max", "mean"):
        run = retrieve(queries, corpus, BagOfWordsEncoder(), BagOfWordsEncoder(), 4,
                       index_spec="ivf:nlist=1,nprobe=1", cache_dir=tmp_path, passages=f"3:2:{agg}")
        _assert_same_run(run, _brute_force(queries, corpus, BagOfWordsEncoder(), 3, 2, agg, 4))
    assert len(list(tmp_path.glob("*.faiss"))) == 2


def test_passage_embeddings_cached_per_split(tmp_path):
    queries, corpus = _corpus(seed=4)
    encoder = BagOfWordsEncoder()

    def calls_for(spec):
        before = encoder.calls
        retrieve(queries, corpus, BagOfWordsEncoder(), encoder, 3, cache_dir=tmp_path, passages=spec)
        return encoder.calls - before

    assert calls_for("3:2:max") > 0 and calls_for("3:2:max") == 0
    assert calls_for("3:2:mean") == 0  # the same windows: the same vectors
    assert calls_for("4:2:max") > 0 and calls_for("3:1:max") > 0 and calls_for("3:2:first") > 0
    assert calls_for(None) > 0
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 5
    sizes = {len(np.load(f)) for f in files}
    assert len(corpus) in sizes and len(split_corpus(corpus, encoder, "3:2:max").texts) in sizes


# ------------------------------------------------------------ the document encoder's length

def test_doc_max_length_and_window_fit(tiny_teacher_st):
    from optical.eval.encoders import SentenceTransformerEncoder

    encoder = SentenceTransformerEncoder(str(tiny_teacher_st))
    longer = with_max_length(encoder, 100)
    assert longer.identity != encoder.identity and with_max_length(encoder, None) is encoder
    longer.encode(["a b c"])
    assert encoder.model.max_seq_length == 64  # restored: the query side shares the model
    with pytest.raises(OpticalError, match="only 128 positions"):
        with_max_length(encoder, 1000)
    with pytest.raises(OpticalError, match="positive|from 1"):
        with_max_length(encoder, 0)
    with pytest.raises(OpticalError, match="no adjustable max length"):
        with_max_length(BagOfWordsEncoder(), 16)
    corpus = {"d0": "con mèo ngủ"}
    too_long = r"80 tokens \+ 2 special \+ 0 prompt tokens exceeds the max length 64"
    with pytest.raises(OpticalError, match=too_long):
        split_corpus(corpus, encoder, "80:40:max")
    assert len(split_corpus(corpus, with_max_length(encoder, 100), "80:40:max").texts) == 1
    encoder.model.prompts = {"query": "query: ", "document": "passage: "}  # as e5 models have
    with pytest.raises(OpticalError, match=r"62 tokens \+ 2 special \+ [1-9] prompt tokens"):
        split_corpus(corpus, encoder, "62:31:max")


def test_first_window_is_truncation(tiny_teacher_st):
    """FirstP at WINDOW tokens = plain encoding truncated at WINDOW + [CLS] + [SEP]."""
    from optical.eval.encoders import SentenceTransformerEncoder

    encoder = SentenceTransformerEncoder(str(tiny_teacher_st))
    corpus = {f"d{i}": " ".join(vi for _, vi in PAIRS[i:i + 3]) for i in range(0, 30, 3)}
    queries = {f"q{i}": PAIRS[i][0] for i in range(0, 30, 3)}
    first = retrieve(queries, corpus, encoder.with_role("query"), encoder, 10, passages="8:8:first")
    truncated = retrieve(queries, corpus, encoder.with_role("query"), with_max_length(encoder, 10), 10)
    _assert_same_run(first, truncated)
    whole = retrieve(queries, corpus, encoder.with_role("query"), encoder, 10)
    assert max(abs(whole[q][d] - first[q][d]) for q in first for d in first[q]) > 1e-3


# ------------------------------------------------------------------------------ end to end

def test_eval_passages_end_to_end(tmp_path, beir_folder, run_dir):  # noqa: F811
    out = tmp_path / "out"
    args = ["eval", "--task", "beir", "--path", str(beir_folder), "--student", str(run_dir),
            "--query-encoder", "teacher", "--doc-encoder", "student", "--out", str(out),
            "--passages", "8:4:max"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["passages"] == "8:4:max" and report["settings"]["doc_max_length"] is None
    toy = report["tasks"]["toy"]
    assert all(0.0 <= v <= 1.0 for v in toy["metrics"].values()) and toy["metrics"]["R@100"] == 1.0
    assert "language_gap" in toy
    assert "passages: `8:4:max`" in (out / "report.md").read_text()
    assert len((out / "run.toy.trec").read_text().splitlines()) == 11 * 12  # documents, not passages
    # Three of the twelve Vietnamese documents have more than 8 tokens: 15 passages encoded.
    rows = {len(np.load(f)) for f in (tmp_path / "cache" / "embeddings").glob("*.npy")}
    assert 15 in rows

    out_b = tmp_path / "out_b"
    result = runner.invoke(app, args[:-4] + ["--out", str(out_b), "--passages", "8:4:mean",
                                             "--doc-max-length", "32"])
    assert result.exit_code == 0, result.output
    assert json.loads((out_b / "metrics.json").read_text())["settings"]["doc_max_length"] == 32
    assert "doc max length: `32`" in (out_b / "report.md").read_text()


@pytest.mark.parametrize("extra, pattern", [
    (["--passages", "8:16:max"], "STRIDE 16 > WINDOW 8"),
    (["--passages", "8:4"], "WINDOW:STRIDE:AGG"),
    (["--passages", "eight:4:max"], "WINDOW must be an integer"),
    (["--passages", "8:4:median"], "AGG must be one of"),
    (["--doc-max-length", "0"], "--doc-max-length must be"),
    (["--task", "captions", "--passages", "8:4:max"], "not --task captions"),
    # Known only once the model is loaded (transformers may have drawn its loading bar on stderr).
    (["--passages", "200:100:max"], "exceeds the max length 64"),
    (["--doc-max-length", "4096"], "only 128 positions"),
])
def test_eval_bad_passages_is_one_error_line(beir_folder, run_dir, extra, pattern):  # noqa: F811
    result = runner.invoke(app, ["eval", "--path", str(beir_folder), "--student", str(run_dir)] + extra)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    if pattern not in ("exceeds the max length 64", "only 128 positions"):
        assert len(lines) == 1, result.stderr  # checked before anything is loaded
    errors = [line for line in lines if "error" in line]
    assert errors == [lines[-1]] and lines[-1].startswith("error: ") and pattern in lines[-1], result.stderr
