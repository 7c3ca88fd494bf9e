"""Evaluation: encode → index → search → metrics (ir-measures) → metrics.json / report.md / runs.

:func:`evaluate` is what ``optical eval`` calls. For each task it scores the clean run,
then (optionally) the English side of the corpus through the teacher (language gap) and
each seeded perturbation (robustness), and writes everything under ``out``:

- ``metrics.json``: settings and, per task, metrics, query counts, gap, perturbation drops;
- ``report.md``: the same as markdown tables;
- ``run.<task>.trec`` (plus ``run.<task>.<variant>.trec`` for gap/perturbation runs);
- ``per_query.json``: ``{label: {metric: {qid: value}}}``, the input of ``--compare``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from optical.data.tasks import DEFAULT_METRICS as TASK_DEFAULT_METRICS
from optical.data.tasks import RetrievalTask, load_task
from optical.errors import OpticalError, writing
from optical.eval.encoders import EncoderFactory, embedding_key, encode_cached, encode_texts
from optical.eval.index import build_index, load_index, parse_index_spec, save_index, search
from optical.eval.mixture import parse_mixture
from optical.eval.metrics import compute, parse_metrics, search_depth, write_trec_run
from optical.eval.passages import parse_max_length, parse_passages, split_corpus, with_max_length
from optical.eval.perturb import parse_perturbation
from optical.files import atomic_write_text

PERTURB_SIDES = ("queries", "docs", "both")


def retrieve(queries: dict[str, str], corpus: dict[str, str], query_encoder, doc_encoder, k: int,
             index_spec=None, cache_dir: Path | None = None, batch_size: int = 64,
             show_progress: bool = False, passages=None) -> dict[str, dict[str, float]]:
    """Dense retrieval: top-``k`` docs per query → run ``{qid: {docid: score}}``.

    Corpus embeddings (and non-flat indexes, whose training is the slow part) are cached
    under ``cache_dir``; query embeddings are cheap and never cached. ``passages``
    (``WINDOW:STRIDE:AGG``, see :mod:`optical.eval.passages`) scores documents from their windows.
    """
    spec = parse_index_spec(index_spec)
    split = split_corpus(corpus, doc_encoder, passages) if passages else None
    texts, encoder = (split.texts, split.encoder) if split else (corpus, doc_encoder)
    doc_ids = list(corpus)
    index = None
    index_path = None
    if cache_dir is not None and spec.kind != "flat":
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{spec}-{split.spec}" if split else str(spec))
        index_path = Path(cache_dir) / f"{embedding_key(encoder, texts)}.{slug}.faiss"
        if index_path.is_file():
            index = load_index(index_path, spec)
    if index is None:
        doc_vectors = encode_cached(encoder, texts, cache_dir, batch_size, show_progress)
        index = build_index(split.index_vectors(doc_vectors) if split else doc_vectors, spec)
        if index_path is not None:
            save_index(index, index_path)
    query_ids = list(queries)
    query_vectors = encode_texts(query_encoder, list(queries.values()), batch_size, show_progress)
    scores, rows = (split.search if split else search)(index, query_vectors, k)
    run: dict[str, dict[str, float]] = {}
    for qid, score_row, id_row in zip(query_ids, scores, rows):
        run[qid] = {doc_ids[i]: float(s) for s, i in zip(score_row, id_row) if i >= 0}
    return run


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


class _Scorer:
    """Runs one retrieval variant, scores it and keeps its per-query values and run file."""

    def __init__(self, measures, k, index_spec, cache_dir, batch_size, show_progress, out,
                 passages=None):
        self.measures, self.k, self.index_spec, self.passages = measures, k, index_spec, passages
        self.cache_dir, self.batch_size, self.show_progress, self.out = cache_dir, batch_size, show_progress, out
        self.per_query: dict[str, dict] = {}

    def __call__(self, label: str, task: RetrievalTask, queries, corpus, q_enc, d_enc) -> dict[str, float]:
        run = retrieve(queries, corpus, q_enc, d_enc, min(self.k, len(corpus)), self.index_spec,
                       self.cache_dir, self.batch_size, self.show_progress, self.passages)
        means, per_query = compute(self.measures, task.qrels, run)
        self.per_query[label] = per_query
        if self.out is not None:
            write_trec_run(run, self.out / f"run.{_slug(label)}.trec")
        return means


def recipe_eval_options(recipe) -> dict:
    """:func:`evaluate` keyword arguments from a recipe's ``eval:`` section: what
    ``optical eval RUN_DIR`` runs for a finished run.

    >>> from optical.recipe import recipe_from_dict
    >>> options = recipe_eval_options(recipe_from_dict({"eval": {"path": "data/vi/clir", "index": "ivf"}}))
    >>> options["query_encoder"], options["doc_encoder"], options["index"]
    ('teacher', 'student', 'ivf:nlist=1024,nprobe=16')
    """
    e = recipe.eval
    index = {"flat": "flat", "ivf": f"ivf:nlist={e.nlist},nprobe={e.nprobe}", "hnsw": f"hnsw:M={e.hnsw_m}"}[e.index]
    return {"task": e.task, "path": e.path, "split": e.split, "lang": recipe.lang, "metrics": list(e.metrics),
            "query_encoder": e.query_encoder, "doc_encoder": e.doc_encoder, "max_corpus": e.max_corpus,
            "index": index, "batch_size": e.batch_size}


#: what `optical eval` uses where neither a flag nor the run's recipe says
EVAL_DEFAULTS = {"task": "beir", "index": "flat", "batch_size": 64, "doc_encoder": "student"}


def eval_options(given: dict, run: str | Path | None = None, student: str | Path | None = None,
                 out: str | Path | None = None) -> tuple[dict, str | Path | None, Path | None]:
    """The settings of one `optical eval`: each flag `given` (None = not given), else the
    run directory's recipe ``eval:`` section, else :data:`EVAL_DEFAULTS`. The query encoder
    defaults to the teacher when the student comes from a run directory (OPTICAL's setting:
    English queries through the teacher), else to the student. Returns (options, student,
    out); `out` defaults to ``RUN/eval-<task>`` for a run."""
    from optical.run_dir import is_run_dir, load_run

    options = dict(EVAL_DEFAULTS)
    if run is not None:
        if student is not None:
            raise OpticalError("give the run directory once: RUN_DIR or --student RUN_DIR")
        recipe, _ = load_run(run)
        options.update(recipe_eval_options(recipe))
        student = run
    options.update({k: v for k, v in given.items() if v is not None})
    if options.get("query_encoder") is None:
        options["query_encoder"] = "teacher" if student is not None and is_run_dir(student) else "student"
    if run is not None and out is None:
        out = Path(run) / f"eval-{options['task']}"
    return options, student, Path(out) if out is not None else None


def evaluate(task: str = "beir", *, path: str | Path | None = None, lang: str | None = None,
             split: str | None = None, student: str | Path | None = None, teacher: str | None = None,
             query_encoder: str = "student", doc_encoder: str = "student",
             metrics: list[str] | str | None = None, out: str | Path | None = None,
             max_corpus: int | None = None, index: str | None = "flat",
             perturb: list[str] | tuple[str, ...] = (), perturb_side: str = "queries",
             batch_size: int = 64, seed: int = 0, cache_dir: str | Path | None = None,
             queries_lang: str = "target", show_progress: bool = False,
             tasks: list[RetrievalTask] | None = None, passages: str | None = None,
             max_length: int | None = None) -> dict:
    """Evaluate one model setting on a task; returns the metrics.json content (a dict).

    ``query_encoder`` / ``doc_encoder``: ``student``, ``teacher`` or any model spec.
    ``tasks`` bypasses loading (library use with in-memory tasks).
    ``passages`` (``WINDOW:STRIDE:AGG``) and ``max_length`` (tokens) apply to every
    document encoder, the teacher's on the English corpus included (:mod:`optical.eval.passages`).
    """
    if perturb_side not in PERTURB_SIDES:
        raise OpticalError(f"--perturb-side must be one of {', '.join(PERTURB_SIDES)}, got {perturb_side!r}")
    if batch_size <= 0:
        raise OpticalError("--batch-size must be positive")
    perturbations = {spec: parse_perturbation(spec, seed) for spec in perturb}
    passage_spec = parse_passages(passages)
    max_length = parse_max_length(max_length)
    index_spec = parse_index_spec(index)
    # the models are checked before any download: a wrong --student fails in a second, not an hour
    encoders = EncoderFactory(student, teacher)
    for role, spec in (("--query-encoder", query_encoder), ("--doc-encoder", doc_encoder)):
        mixture = parse_mixture(spec)
        if mixture is not None and role == "--doc-encoder" and (passage_spec or max_length):
            raise OpticalError(f"--passages and --doc-max-length need one document encoder, not the mixture {spec!r}")
        for name in ([n for _, n in mixture.terms] if mixture else [spec]):
            what = f"{spec}: {name}" if mixture else spec
            if name == "teacher" and not encoders.has_teacher():
                raise OpticalError(f"{role} {what} needs --student RUN_DIR with a recipe.yaml teacher section, "
                                   f"or --teacher MODEL")
            if name == "student" and encoders.run.student is None:
                raise OpticalError(f"{role} {what} needs --student RUN_DIR or MODEL_FOLDER")
    if tasks is None:
        tasks = load_task(task, path=path, lang=lang, split=split, max_corpus=max_corpus, seed=seed,
                          queries_lang=queries_lang)
    if metrics is None and task in TASK_DEFAULT_METRICS:
        metrics = TASK_DEFAULT_METRICS[task]
    measures = parse_metrics(metrics)
    if cache_dir is None:
        from optical.files import default_cache_dir

        cache_dir = default_cache_dir() / "embeddings"
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise OpticalError(f"--out {out_dir}: is a file, not a folder")
        with writing(out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)

    score = _Scorer(measures, search_depth(measures), index_spec, Path(cache_dir), batch_size,
                    show_progress, out_dir, passage_spec)
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for item in tasks:
        started = time.perf_counter()
        q_spec, d_spec = (doc_encoder, query_encoder) if item.swap_encoders else (query_encoder, doc_encoder)
        q_enc = encoders.get(q_spec, "query")
        d_enc = with_max_length(encoders.get(d_spec, "document"), max_length)
        clean = score(item.name, item, item.queries, item.corpus, q_enc, d_enc)
        entry: dict = dict(metrics=clean, n_queries=len(item.queries), n_unjudged=len(item.unjudged),
                           corpus_size=len(item.corpus), query_encoder=q_spec, doc_encoder=d_spec)
        if item.corpus_en is not None and encoders.has_teacher():
            english = score(f"{item.name}[en]", item, item.queries, item.corpus_en,
                            encoders.get("teacher", "query"),
                            with_max_length(encoders.get("teacher", "document"), max_length))
            entry["english"] = english
            entry["language_gap"] = {m: english[m] - clean[m] for m in clean}
        elif item.corpus_en is not None:
            entry["language_gap_skipped"] = "no teacher (use --student RUN_DIR or --teacher MODEL)"
        perturbed = {}
        side = perturb_side
        if item.swap_encoders and side != "both":
            # Sides follow the language, like encoders: "docs" stays the target-language text.
            side = "docs" if side == "queries" else "queries"
        for spec, change in perturbations.items():
            queries, corpus = item.queries, item.corpus
            if side in ("queries", "both"):
                queries = {q: change(t) for q, t in queries.items()}
            if side in ("docs", "both"):
                corpus = {d: change(t) for d, t in corpus.items()}
            if queries == item.queries and corpus == item.corpus:
                # e.g. strip-diacritics on English queries: a 0.0000 drop would read as robustness
                perturbed[spec] = dict(side=side, unchanged=True)
                continue
            values = score(f"{item.name}[{spec}]", item, queries, corpus, q_enc, d_enc)
            perturbed[spec] = dict(side=side, metrics=values,
                                   drop={m: clean[m] - values[m] for m in clean})
        if perturbed:
            entry["perturbed"] = perturbed
        results[item.name] = entry
        seconds[item.name] = time.perf_counter() - started

    report = dict(settings=dict(task=task, path=str(path) if path else None, lang=lang, split=split,
                                student=str(student) if student else None, teacher=teacher,
                                query_encoder=query_encoder, doc_encoder=doc_encoder,
                                metrics=[str(m) for m in measures], index=str(index_spec),
                                max_corpus=max_corpus, perturb=list(perturb), perturb_side=perturb_side,
                                seed=seed, passages=str(passage_spec) if passage_spec else None,
                                doc_max_length=max_length),
                  tasks=results)
    if out_dir is not None:
        atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(out_dir / "per_query.json", json.dumps(score.per_query, ensure_ascii=False) + "\n")
        atomic_write_text(out_dir / "report.md", format_report(report))
        from optical.eval.mteb import mteb_result

        for name, entry in results.items():  # also in MTEB's layout, one file per task
            atomic_write_text(out_dir / "mteb" / f"{name}.json",
                              json.dumps(mteb_result(name, entry, report["settings"], seconds[name]), indent=2) + "\n")
    return report


def format_report(report: dict) -> str:
    """Markdown: one table per task (clean, English/gap, perturbations/drops)."""
    settings = report["settings"]
    names = settings["metrics"]
    lines = ["# optical eval", "",
             f"query encoder: `{settings['query_encoder']}`, doc encoder: `{settings['doc_encoder']}`, "
             f"student: `{settings['student']}`, index: `{settings['index']}`, "
             f"passages: `{settings.get('passages') or 'whole documents'}`, "
             f"doc max length: `{settings.get('doc_max_length') or 'model default'}`", ""]

    def row(label: str, values: dict, signed: bool = False) -> str:
        cells = [f"{values[m]:+.4f}" if signed else f"{values[m]:.4f}" for m in names]
        return f"| {label} | " + " | ".join(cells) + " |"

    for name, entry in report["tasks"].items():
        lines += [f"## {name}", "",
                  f"{entry['n_queries']} judged queries, {entry['n_unjudged']} unjudged (not scored), "
                  f"{entry['corpus_size']} documents; queries → `{entry['query_encoder']}`, "
                  f"documents → `{entry['doc_encoder']}`", "",
                  "| run | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
                  row("target", entry["metrics"])]
        if "english" in entry:
            lines += [row("English corpus (teacher)", entry["english"]),
                      row("gap (English − target)", entry["language_gap"], signed=True)]
        unchanged = [f"`{spec}` changes no text on the {variant['side']} side (nothing measured)"
                     for spec, variant in entry.get("perturbed", {}).items() if variant.get("unchanged")]
        for spec, variant in entry.get("perturbed", {}).items():
            if variant.get("unchanged"):
                continue
            lines += [row(f"{spec} ({variant['side']})", variant["metrics"]),
                      row(f"drop ({spec})", variant["drop"], signed=True)]
        if "language_gap_skipped" in entry:
            lines += ["", f"Language gap skipped: {entry['language_gap_skipped']}."]
        lines += ["", *(f"Perturbation skipped: {note}." for note in unchanged)] if unchanged else []
        lines.append("")
    return "\n".join(lines)
