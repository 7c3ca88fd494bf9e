"""Metrics by hand, perturbations, compare, and `optical eval` end to end on the tiny model."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from optical.cli import app
from optical.eval.compare import compare_runs, permutation_test
from optical.errors import OpticalError
from optical.eval.metrics import compute, parse_metrics, read_trec_run, search_depth, write_trec_run
from optical.eval.perturb import parse_perturbation, strip_diacritics, typos

runner = CliRunner()


# ------------------------------------------------------------------------------ metrics

def test_metrics_match_hand_computation(tmp_path):
    qrels = {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 2, "d4": 1}, "q3": {"d7": 1}}
    run = {"q1": {"d5": 0.9, "d1": 0.8, "d6": 0.7, "d2": 0.6},  # relevant at ranks 2 and 4
           "q2": {"d4": 0.9, "d3": 0.5}}  # grade 1 at rank 1, grade 2 at rank 2; q3 missed entirely
    means, per_query = compute(parse_metrics(["nDCG@10", "AP@100", "RR@10", "R@1", "R@10"]), qrels, run)
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    ndcg_q2 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))  # trec_eval gains are the grades
    assert per_query["nDCG@10"]["q1"] == pytest.approx(ndcg_q1)
    assert per_query["nDCG@10"]["q2"] == pytest.approx(ndcg_q2)
    assert per_query["AP@100"]["q1"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert per_query["AP@100"]["q2"] == pytest.approx(1.0)
    assert per_query["RR@10"] == pytest.approx({"q1": 0.5, "q2": 1.0, "q3": 0.0})
    assert per_query["R@1"] == pytest.approx({"q1": 0.0, "q2": 0.5, "q3": 0.0})
    # Missed queries count as 0 in the mean (3 queries, not 2).
    assert means["nDCG@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 3)
    assert means["RR@10"] == pytest.approx(0.5)
    assert list(means) == ["nDCG@10", "AP@100", "RR@10", "R@1", "R@10"]
    path = write_trec_run(run, tmp_path / "run.trec")
    assert path.read_text().splitlines()[0] == "q1 Q0 d5 1 0.900000 optical"
    assert read_trec_run(path) == run


def test_metric_names_and_depth():
    assert search_depth(parse_metrics("nDCG@10,R@100")) == 100
    assert search_depth(parse_metrics(["RR"])) == 1000
    with pytest.raises(OpticalError, match="unknown metric 'nDGC@10'"):
        parse_metrics(["nDGC@10"])
    with pytest.raises(OpticalError, match="unknown metric 'P@'"):
        parse_metrics(["P@"])


# ------------------------------------------------------------------------- perturbations

def test_strip_diacritics_vietnamese():
    assert strip_diacritics("Con mèo ngủ") == "Con meo ngu"
    assert strip_diacritics("Đường đi") == "Duong di"
    assert strip_diacritics("Tôi uống cà phê nóng mỗi sáng.") == "Toi uong ca phe nong moi sang."


def test_typos_are_seeded_and_rate_bounded():
    text = "the quick brown fox jumps over the lazy dog " * 5
    once, again = typos(text, 0.1, seed=3), typos(text, 0.1, seed=3)
    assert once == again and once != text and typos(text, 0.1, seed=4) != once
    assert typos(text, 0.0) == text
    assert parse_perturbation("lowercase")("ÀB") == "àb"
    for bad in ("typos", "typos:2", "shout"):
        with pytest.raises(OpticalError, match="--perturb"):
            parse_perturbation(bad)


# ------------------------------------------------------------------------------- compare

def test_compare_toy_runs(tmp_path):
    for name, values in {"a": [0.1, 0.2, 0.3, 0.4, 0.5, 0.2, 0.1, 0.3],
                         "b": [0.5, 0.6, 0.6, 0.9, 0.8, 0.7, 0.4, 0.7]}.items():
        (tmp_path / name).mkdir()
        per = {"toy": {"nDCG@10": {f"q{i}": v for i, v in enumerate(values)}, "only_" + name: {"q0": 1.0}}}
        (tmp_path / name / "per_query.json").write_text(json.dumps(per))
    [row] = compare_runs(tmp_path / "a", tmp_path / "b")
    assert row["metric"] == "nDCG@10" and row["n"] == 8
    assert row["diff"] == pytest.approx(0.3875)
    assert row["p_ttest"] < 0.001 and row["p_perm"] < 0.01
    same = np.array([0.2, 0.4, 0.6])
    assert permutation_test(same, same) == 1.0
    result = runner.invoke(app, ["eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "| toy | nDCG@10 | 8 | 0.2625 | 0.6500 | +0.3875 |" in result.output


def test_permutation_test_is_exact_on_small_samples_and_holm_corrects_over_metrics(tmp_path):
    import itertools

    rng = np.random.default_rng(3)
    a, b = rng.random(10), rng.random(10) + 0.2
    diff = b - a
    flips = np.array(list(itertools.product([-1.0, 1.0], repeat=10)))
    exact = np.mean(np.abs((flips * diff).mean(1)) >= abs(diff.mean()) - 1e-12)
    assert permutation_test(a, b) == pytest.approx(exact)  # 1,024 patterns ≤ 10,000 rounds: enumerated
    for name, shift in (("a", 0.0), ("b", 0.1)):
        (tmp_path / name).mkdir()
        values = {f"q{i}": float(v + shift * (i % 3 == 0)) for i, v in enumerate(a)}
        per = {"toy": {"nDCG@10": values, "RR@10": values, "R@10": {q: 0.5 for q in values}}}
        (tmp_path / name / "per_query.json").write_text(json.dumps(per))
    rows = compare_runs(tmp_path / "a", tmp_path / "b")
    by_metric = {r["metric"]: r for r in rows}
    smallest = min(r["p_perm"] for r in rows)
    assert min(r["p_holm"] for r in rows) == pytest.approx(min(1.0, 3 * smallest))
    assert all(r["p_holm"] >= r["p_perm"] for r in rows) and by_metric["R@10"]["p_holm"] == 1.0


def test_compare_warns_when_the_evaluations_differ_besides_the_model(tmp_path):
    for name, max_corpus, size in (("a", None, 12), ("b", 5, 5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_query.json").write_text(json.dumps({"toy": {"nDCG@10": {"q0": 0.5, "q1": 0.2}}}))
        (tmp_path / name / "metrics.json").write_text(json.dumps(
            {"settings": {"task": "beir", "max_corpus": max_corpus, "index": "flat"},
             "tasks": {"toy": {"corpus_size": size, "n_queries": 2}}}))
    result = runner.invoke(app, ["eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "warning: the two evaluations differ in max_corpus: None vs 5" in result.output
    assert "warning: the two evaluations differ in toy.corpus_size: 12 vs 5" in result.output
    assert "p (perm., Holm)" in result.output


# ---------------------------------------------------------------- end to end on tiny models

PAIRS = [line.split("\t") for line in
         (Path(__file__).parent / "fixtures" / "bitext_vi.tsv").read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def beir_folder(tmp_path) -> Path:
    """English queries, Vietnamese corpus (+ English corpus_en), one mate each, one unjudged query."""
    folder = tmp_path / "toy"
    (folder / "qrels").mkdir(parents=True)
    pairs = PAIRS[:12]
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for i, (_, vi) in enumerate(pairs):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": vi}, ensure_ascii=False) + "\n")
    with (folder / "corpus_en.jsonl").open("w", encoding="utf-8") as f:
        for i, (en, _) in enumerate(pairs):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": en}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
        for i, (en, _) in enumerate(pairs):
            f.write(json.dumps({"_id": f"q{i}", "text": en}) + "\n")
    lines = [f"q{i}\td{i}\t1" for i in range(len(pairs) - 1)]  # last query left unjudged
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return folder


@pytest.fixture()
def run_dir(tmp_path, tiny_teacher_st, monkeypatch) -> Path:
    monkeypatch.setenv("OPTICAL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    shutil.copytree(tiny_teacher_st, run / "student")
    (run / "recipe.yaml").write_text(
        f"teacher:\n  kind: sentence-transformers\n  model: {tiny_teacher_st}\n  max_length: 64\n")
    return run


def test_eval_run_dir_runs_the_recipes_eval_section(tmp_path, beir_folder, run_dir):
    """`optical eval RUN_DIR`: the recipe's eval: section, OPTICAL's setting, flags override."""
    recipe = run_dir / "recipe.yaml"
    recipe.write_text(recipe.read_text() + f"eval:\n  path: {beir_folder}\n  metrics: [RR@10, R@10]\n")
    result = runner.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "eval-beir" / "metrics.json").read_text())
    toy = report["tasks"]["toy"]
    assert list(toy["metrics"]) == ["RR@10", "R@10"]
    assert (toy["query_encoder"], toy["doc_encoder"]) == ("teacher", "student")
    # a flag beats the recipe; the default out folder is the run's
    result = runner.invoke(app, ["eval", str(run_dir), "--metrics", "nDCG@10", "--query-encoder", "student",
                                 "--out", str(tmp_path / "flags")])
    assert result.exit_code == 0, result.output
    toy = json.loads((tmp_path / "flags" / "metrics.json").read_text())["tasks"]["toy"]
    assert list(toy["metrics"]) == ["nDCG@10"] and toy["query_encoder"] == "student"
    twice = runner.invoke(app, ["eval", str(run_dir), "--student", str(run_dir)])
    assert twice.exit_code == 2 and twice.output.strip() == "error: give the run directory once: RUN_DIR or --student RUN_DIR"
    missing = runner.invoke(app, ["eval", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "run directory not found" in missing.output


def test_perturbation_that_changes_nothing_says_so(tmp_path, beir_folder, run_dir):
    """English queries have no diacritics: a 0.0000 drop would read as robustness."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "--path", str(beir_folder), "--student", str(run_dir), "--out", str(out),
                                 "--perturb", "strip-diacritics", "--perturb", "lowercase",
                                 "--perturb-side", "queries", "--metrics", "RR@10"])
    assert result.exit_code == 0, result.output
    toy = json.loads((out / "metrics.json").read_text())["tasks"]["toy"]
    assert toy["perturbed"]["strip-diacritics"] == {"side": "queries", "unchanged": True}
    assert "drop" in toy["perturbed"]["lowercase"]  # the English queries do have capitals
    assert "Perturbation skipped: `strip-diacritics` changes no text on the queries side" in result.output


def test_download_tasks_offline_fail_in_one_line_and_check_the_student_first(tmp_path, monkeypatch, run_dir):
    import requests

    from optical.data import tasks

    monkeypatch.setenv("OPTICAL_CACHE", str(tmp_path / "cache"))

    def offline(dataset_id):
        raise requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='huggingface.co', port=443): Max retries exceeded (Failed to resolve)")

    monkeypatch.setattr(tasks, "_ir_dataset", offline)
    for task in ("mmarco", "wikiclir"):
        result = runner.invoke(app, ["eval", "--task", task, "--lang", "vi", "--student", str(run_dir)])
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [
            result.output.strip()] and "download failed (cannot reach huggingface.co)" in result.output

    def must_not_download(dataset_id):
        raise AssertionError("downloaded before checking --student")

    monkeypatch.setattr(tasks, "_ir_dataset", must_not_download)
    missing = runner.invoke(app, ["eval", "--task", "mmarco", "--lang", "vi", "--student", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "student run directory or model folder not found" in missing.output
    no_teacher = runner.invoke(app, ["eval", "--task", "mmarco", "--lang", "vi", "--student", str(run_dir / "student"),
                                     "--query-encoder", "teacher"])
    assert no_teacher.exit_code == 2 and "--query-encoder teacher needs" in no_teacher.output


def test_eval_end_to_end(tmp_path, beir_folder, run_dir):
    out = tmp_path / "out"
    args = ["eval", "--task", "beir", "--path", str(beir_folder), "--student", str(run_dir),
            "--query-encoder", "teacher", "--doc-encoder", "student", "--out", str(out),
            "--perturb", "strip-diacritics", "--perturb-side", "docs"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    toy = report["tasks"]["toy"]
    assert list(toy["metrics"]) == ["nDCG@10", "AP@100", "RR@10", "R@10", "R@100"]
    assert toy["n_queries"] == 11 and toy["n_unjudged"] == 1 and toy["corpus_size"] == 12
    assert all(0.0 <= v <= 1.0 for v in toy["metrics"].values())
    assert toy["metrics"]["R@100"] == 1.0  # 12 documents: every mate is retrieved
    assert set(toy["language_gap"]) == set(toy["metrics"])
    drop = toy["perturbed"]["strip-diacritics"]["drop"]["nDCG@10"]
    assert drop == pytest.approx(toy["metrics"]["nDCG@10"] - toy["perturbed"]["strip-diacritics"]["metrics"]["nDCG@10"])
    lines = (out / "run.toy.trec").read_text().splitlines()
    assert len(lines) == 11 * 12 and lines[0].split()[1] == "Q0"
    assert (out / "run.toy-en.trec").is_file() and (out / "run.toy-strip-diacritics.trec").is_file()
    per_query = json.loads((out / "per_query.json").read_text())
    assert set(per_query) == {"toy", "toy[en]", "toy[strip-diacritics]"}
    assert len(per_query["toy"]["nDCG@10"]) == 11
    markdown = (out / "report.md").read_text()
    assert "| target |" in markdown and "gap (English − target)" in markdown and "1 unjudged" in markdown
    assert list((tmp_path / "cache" / "embeddings").glob("*.npy"))  # corpus embeddings cached
    mteb = json.loads((out / "mteb" / "toy.json").read_text())  # MTEB's layout, same numbers
    [scores] = mteb["scores"]["test"]
    assert scores["ndcg_at_10"] == toy["metrics"]["nDCG@10"] == scores["main_score"]
    assert scores["map_at_100"] == toy["metrics"]["AP@100"] and scores["mrr_at_10"] == toy["metrics"]["RR@10"]
    assert mteb["task_name"] == "toy" and mteb["evaluation_time"] > 0 and "torch" in mteb["optical"]["versions"]

    # Second setting (student on both sides), then compare the two through the CLI.
    out_b = tmp_path / "out_b"
    result = runner.invoke(app, ["eval", "--path", str(beir_folder), "--student", str(run_dir / "student"),
                                 "--out", str(out_b), "--metrics", "nDCG@10,RR@10", "--index",
                                 "hnsw:M=8,efSearch=16"])
    assert result.exit_code == 0, result.output
    assert "language_gap" not in json.loads((out_b / "metrics.json").read_text())["tasks"]["toy"]
    result = runner.invoke(app, ["eval", "--compare", str(out), str(out_b)])
    assert result.exit_code == 0, result.output
    assert "| toy | nDCG@10 | 11 |" in result.output and "| toy | RR@10 | 11 |" in result.output


def test_eval_bitext_both_directions(tmp_path, run_dir, bitext_tsv):
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "--task", "bitext", "--lang", "vi", "--path", str(bitext_tsv),
                                 "--student", str(run_dir), "--query-encoder", "teacher", "--out", str(out),
                                 "--perturb", "strip-diacritics", "--perturb-side", "docs"])
    assert result.exit_code == 0, result.output
    tasks = json.loads((out / "metrics.json").read_text())["tasks"]
    assert set(tasks) == {"bitext.en-vi", "bitext.vi-en"}
    assert list(tasks["bitext.en-vi"]["metrics"]) == ["R@1", "R@5", "R@10", "RR"]
    # The reverse direction keeps each language on its encoder.
    assert tasks["bitext.vi-en"]["query_encoder"] == "student" and tasks["bitext.vi-en"]["doc_encoder"] == "teacher"
    # ... and perturbations follow the language: "docs" means the Vietnamese side both ways.
    assert tasks["bitext.en-vi"]["perturbed"]["strip-diacritics"]["side"] == "docs"
    assert tasks["bitext.vi-en"]["perturbed"]["strip-diacritics"]["side"] == "queries"
    assert (out / "run.bitext.en-vi.trec").is_file() and (out / "run.bitext.vi-en.trec").is_file()


@pytest.mark.parametrize("case, pattern", [
    ("missing", "BEIR folder not found"),
    ("unknown_query", "test.tsv:2: unknown query id 'q99'"),
    ("unknown_doc", "test.tsv:2: unknown corpus id 'd99'"),
    ("empty_corpus", "corpus.jsonl: corpus is empty"),
    ("malformed", "queries.jsonl:3: invalid JSON"),
    ("no_judgments", "no judged queries"),
    ("bad_metric", "unknown metric 'MAPP'"),
    ("bad_perturb", "--perturb"),
    ("no_student", "needs --student"),
])
def test_eval_bad_input_is_one_error_line(tmp_path, beir_folder, run_dir, case, pattern):
    args = ["eval", "--path", str(beir_folder), "--student", str(run_dir)]
    qrels = beir_folder / "qrels" / "test.tsv"
    if case == "missing":
        args[2] = str(tmp_path / "nope")
    elif case == "unknown_query":
        qrels.write_text("query-id\tcorpus-id\tscore\nq99\td0\t1\n")
    elif case == "unknown_doc":
        qrels.write_text("query-id\tcorpus-id\tscore\nq0\td99\t1\n")
    elif case == "empty_corpus":
        (beir_folder / "corpus.jsonl").write_text("\n")
    elif case == "malformed":
        lines = (beir_folder / "queries.jsonl").read_text().splitlines()
        lines[2] = lines[2][:-3]
        (beir_folder / "queries.jsonl").write_text("\n".join(lines) + "\n")
    elif case == "no_judgments":
        qrels.write_text("query-id\tcorpus-id\tscore\n")
    elif case == "bad_metric":
        args += ["--metrics", "MAPP"]
    elif case == "bad_perturb":
        args += ["--perturb", "typos:x"]
    elif case == "no_student":
        args = args[:3]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], result.stderr


# ----------------------------------------------------------------- encoders and the cache

class CountingEncoder:
    """Stands in for a model: a fixed random projection of character counts."""

    def __init__(self, identity="fake@1"):
        self.name, self.identity, self.calls = "fake", identity, 0

    def encode(self, texts, batch_size=64, show_progress=False):
        self.calls += 1
        return np.array([[len(t), t.count("a") + 1.0, 1.0] for t in texts], dtype=np.float32)


def test_encoding_keeps_order_and_caches(tmp_path):
    from optical.eval.encoders import encode_cached, encode_texts, folder_identity

    texts = ["a", "aaaa bbb", "ab", "", "bbbbbbbbbbbb"]
    vectors = encode_texts(CountingEncoder(), texts, batch_size=2)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    expected = np.array([[len(t), t.count("a") + 1.0, 1.0] for t in texts])
    np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)

    corpus = {f"d{i}": t for i, t in enumerate(texts)}
    encoder = CountingEncoder()
    first = encode_cached(encoder, corpus, tmp_path)
    calls = encoder.calls
    np.testing.assert_array_equal(encode_cached(encoder, corpus, tmp_path), first)
    assert encoder.calls == calls  # served from the .npy file
    encode_cached(encoder, {**corpus, "d0": "changed"}, tmp_path)
    encode_cached(CountingEncoder("fake@2"), corpus, tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 3

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"1")
    before = folder_identity(model)
    (model / "weights.bin").write_bytes(b"22")
    assert folder_identity(model) != before


def test_run_dir_is_read_through_the_recipe_schema(tmp_path, tiny_teacher_st):
    from optical.eval.encoders import resolve_run

    run = tmp_path / "run"
    shutil.copytree(tiny_teacher_st, run / "student")
    (run / "recipe.yaml").write_text("train:\n  lr: 1.0\n")  # no teacher section: the recipe default, as distill
    assert resolve_run(run).teacher.model_spec == "sentence-transformers/all-MiniLM-L6-v2"
    (run / "recipe.yaml").write_text("teacher:\n  kind: clip\n  modell: x\n")
    with pytest.raises(OpticalError, match=r"recipe.yaml:3: teacher.modell: unknown key"):
        resolve_run(run)
    (run / "recipe.yaml").write_text("teacher:\n  kind: clip\n")
    (run / "student" / "modules.json").unlink()  # a final save that never completed
    with pytest.raises(OpticalError, match=r"not a saved student .*--resume"):
        resolve_run(run)
    shutil.rmtree(run / "student")
    with pytest.raises(OpticalError, match=r"has no student/ yet"):
        resolve_run(run)
    assert resolve_run(tiny_teacher_st).teacher is None
    with pytest.raises(OpticalError, match="neither a run directory"):
        resolve_run(tmp_path)


def test_clip_teacher_through_load_teacher(tmp_path, beir_folder, tiny_clip, tiny_teacher_st):
    run = tmp_path / "clip_run"
    shutil.copytree(tiny_teacher_st, run / "student")
    (run / "recipe.yaml").write_text(f"teacher:\n  kind: clip\n  model: {tiny_clip}\n  max_length: 32\n")
    result = runner.invoke(app, ["eval", "--path", str(beir_folder), "--student", str(run),
                                 "--query-encoder", "teacher", "--doc-encoder", "teacher",
                                 "--metrics", "RR@10", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    toy = json.loads((tmp_path / "out" / "metrics.json").read_text())["tasks"]["toy"]
    assert 0.0 < toy["metrics"]["RR@10"] <= 1.0 and "english" in toy


def test_student_may_be_a_packaged_model_or_hub_id(monkeypatch, tmp_path):
    """`--student packaged:NAME` / a hub id resolve as model specs, not as run folders."""
    import optical.eval.encoders as enc

    monkeypatch.setattr(enc, "resolve_model", lambda spec: str(tmp_path / "resolved"))
    assert enc.resolve_run("packaged:all-minilm-l6-v2").student == str(tmp_path / "resolved")
    assert enc.resolve_run("intfloat/multilingual-e5-small").teacher is None
    with pytest.raises(OpticalError, match="not found"):
        enc.resolve_run(str(tmp_path / "missing" / "run"))
