"""Retrieval tasks: queries, a corpus and graded judgments, from any source.

Every loader returns :class:`RetrievalTask` objects. The BEIR folder is the universal
format; named tasks (mMARCO, WikiCLIR) are converted to a BEIR folder once, cached, and
then loaded through the same BEIR reader, so every task gets the same validation.

Loaders are registered in :data:`TASKS` (name → function); ``captions`` will join later.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

from optical.data.jsonl import read_jsonl, text_lines
from optical.errors import OpticalError, where

Qrels = dict[str, dict[str, int]]

#: the largest relevance grade (trec_eval and ir-measures keep grades in a C int)
MAX_GRADE = 2**31 - 1


@dataclass
class RetrievalTask:
    """One retrieval problem.

    ``queries``: qid → text; ``corpus``: docid → text; ``qrels``: qid → {docid: grade};
    ``corpus_en``: docid → English text of the same documents (for the language gap), or None.
    ``swap_encoders``: True when the queries are in the language the doc encoder handles
    (bitext target→English), so each language keeps its own encoder.
    ``unjudged``: qids that have text but no judgments in this split (counted, not searched).
    """

    name: str
    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: Qrels
    corpus_en: dict[str, str] | None = None
    swap_encoders: bool = False
    unjudged: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- BEIR folders

def _read_texts(path: Path, with_title: bool) -> dict[str, str]:
    """Read ``_id → text`` from a BEIR JSONL file; documents are "title text" as in BEIR."""
    texts: dict[str, str] = {}
    for number, record in read_jsonl(path, ("_id", "text")):
        key = str(record["_id"])
        if key in texts:
            raise OpticalError(f"{where(path, number, '_id')}: duplicate id {key!r}")
        text = str(record["text"] or "")
        title = str(record.get("title") or "") if with_title else ""
        texts[key] = f"{title} {text}".strip() if title else text
    return texts


def _read_qrels(path: Path, queries: dict[str, str], corpus: dict[str, str]) -> Qrels:
    """Read a BEIR qrels TSV (header ``query-id corpus-id score``); unknown ids raise."""
    if not path.is_file():
        raise OpticalError(f"{path}: file not found")
    qrels: Qrels = {}
    for number, line in text_lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split("\t")
        if number == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(parts) != 3:
            raise OpticalError(f"{where(path, number)}: expected 3 tab-separated columns "
                               f"(query-id, corpus-id, score), got {len(parts)}")
        qid, docid, score = (p.strip() for p in parts)
        if qid not in queries:
            raise OpticalError(f"{where(path, number)}: unknown query id {qid!r}")
        if docid not in corpus:
            raise OpticalError(f"{where(path, number)}: unknown corpus id {docid!r}")
        try:
            value = float(score)
        except ValueError:
            raise OpticalError(f"{where(path, number)}: score {score!r} is not a number") from None
        if not math.isfinite(value) or abs(value) > MAX_GRADE:
            raise OpticalError(f"{where(path, number)}: score {score!r} is not a relevance grade "
                               f"(a finite integer up to {MAX_GRADE})")
        grade = int(value)
        qrels.setdefault(qid, {})[docid] = grade
    return qrels


def load_beir(path: str | Path, split: str = "test", name: str | None = None) -> RetrievalTask:
    """Load a BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv, optional corpus_en.jsonl.

    Queries without judgments in ``split`` are kept out of the search and listed in
    ``unjudged``; a split with no judged query at all is an error.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise OpticalError(f"{folder}: BEIR folder not found")
    corpus = _read_texts(folder / "corpus.jsonl", with_title=True)
    if not corpus:
        raise OpticalError(f"{folder / 'corpus.jsonl'}: corpus is empty")
    queries = _read_texts(folder / "queries.jsonl", with_title=False)
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv", queries, corpus)
    if not qrels:
        raise OpticalError(f"{folder / 'qrels' / f'{split}.tsv'}: no judged queries")
    corpus_en = None
    if (folder / "corpus_en.jsonl").is_file():
        corpus_en = _read_texts(folder / "corpus_en.jsonl", with_title=True)
        missing = sorted(set(corpus) - set(corpus_en))
        if missing:
            raise OpticalError(f"{folder / 'corpus_en.jsonl'}: no English text for corpus id "
                               f"{missing[0]!r} ({len(missing)} missing)")
    unjudged = sorted(q for q in queries if q not in qrels)
    judged = {q: t for q, t in queries.items() if q in qrels}
    return RetrievalTask(name=name or folder.name, queries=judged, corpus=corpus, qrels=qrels,
                         corpus_en=corpus_en, unjudged=unjudged)


def write_beir(folder: Path, queries: dict[str, str], corpus: dict[str, str], qrels: Qrels,
               split: str = "test", corpus_en: dict[str, str] | None = None) -> Path:
    """Write a BEIR folder (the cache format for converted tasks). Returns ``folder``."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)

    def dump(name: str, texts: dict[str, str]) -> None:
        with (folder / name).open("w", encoding="utf-8") as handle:
            for key, text in texts.items():
                handle.write(json.dumps({"_id": key, "title": "", "text": text},
                                        ensure_ascii=False) + "\n")

    dump("corpus.jsonl", corpus)
    dump("queries.jsonl", queries)
    if corpus_en is not None:
        dump("corpus_en.jsonl", corpus_en)
    with (folder / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                handle.write(f"{qid}\t{docid}\t{grade}\n")
    return folder


# ------------------------------------------------------------ ir_datasets-shaped sources

def _text_of(record) -> str:
    """Text of an ir_datasets doc/query namedtuple (``default_text`` when it has one)."""
    if hasattr(record, "default_text"):
        return record.default_text()
    title = getattr(record, "title", "") or ""
    return f"{title} {record.text}".strip() if title else record.text


def convert_ir_dataset(docs: Iterable, queries: Iterable, qrels: Iterable,
                       max_corpus: int | None = None, seed: int = 0
                       ) -> tuple[dict[str, str], dict[str, str], Qrels]:
    """Turn ir_datasets-style iterables into (queries, corpus, qrels) dicts.

    ``docs`` yield ``doc_id`` + text fields, ``queries`` ``query_id`` + text fields,
    ``qrels`` ``query_id, doc_id, relevance``. With ``max_corpus``, keep every judged
    document plus a seeded uniform sample of the others (reservoir sampling, so a
    9M-passage corpus streams through in one pass), at most ``max_corpus`` in total
    unless the judged documents alone exceed it.
    """
    judgments: Qrels = {}
    for qrel in qrels:
        judgments.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
    query_texts = {str(q.query_id): _text_of(q) for q in queries if str(q.query_id) in judgments}
    judgments = {q: d for q, d in judgments.items() if q in query_texts}
    judged_docs = {d for docs_of in judgments.values() for d in docs_of}

    rng = random.Random(seed)
    corpus: dict[str, str] = {}
    # Judgments may name documents missing from the collection, so how many judged ones
    # exist is known only at the end: sample max_corpus unjudged ones, trim afterwards.
    room = max_corpus
    reservoir: list[tuple[str, str]] = []
    seen_unjudged = 0
    for doc in docs:
        doc_id = str(doc.doc_id)
        if doc_id in judged_docs:
            corpus[doc_id] = _text_of(doc)
        elif room is None:
            corpus[doc_id] = _text_of(doc)
        elif room > 0:
            seen_unjudged += 1
            if len(reservoir) < room:
                reservoir.append((doc_id, _text_of(doc)))
            else:
                slot = rng.randrange(seen_unjudged)
                if slot < room:
                    reservoir[slot] = (doc_id, _text_of(doc))
    if room is not None:
        need = max(0, room - len(corpus))
        corpus.update(sorted(rng.sample(reservoir, min(need, len(reservoir)))))
    # Judgments that point outside the collection cannot be retrieved; drop them here so
    # the cached BEIR folder is self-consistent.
    judgments = {q: {d: g for d, g in ds.items() if d in corpus} for q, ds in judgments.items()}
    judgments = {q: ds for q, ds in judgments.items() if ds}
    query_texts = {q: t for q, t in query_texts.items() if q in judgments}
    return query_texts, corpus, judgments


def _cache_root(cache_dir: Path | None) -> Path:
    from optical.files import default_cache_dir

    return Path(cache_dir) if cache_dir else default_cache_dir() / "tasks"


def _cached_conversion(key: str, build: Callable[[], tuple], cache_dir: Path | None) -> Path:
    """Build a BEIR folder once under the cache; a ``.done`` marker makes it atomic enough."""
    folder = _cache_root(cache_dir) / re.sub(r"[^A-Za-z0-9._-]+", "_", key)
    if (folder / ".done").is_file():
        return folder
    with _download_errors(key):
        queries, corpus, qrels, corpus_en = build()
    if not corpus:
        raise OpticalError(f"{key}: corpus is empty")
    write_beir(folder, queries, corpus, qrels, corpus_en=corpus_en)
    (folder / ".done").write_text("ok\n")
    return folder


@contextlib.contextmanager
def _download_errors(key: str):
    """A failed download (no network, host unknown, refused) becomes one OpticalError line;
    ir_datasets' own retry chatter on the way there is kept off the terminal."""
    import logging
    import socket
    import urllib.error

    network = [urllib.error.URLError, socket.gaierror, socket.timeout, ConnectionError]
    try:
        import requests

        network.append(requests.exceptions.RequestException)
    except ImportError:
        pass
    # ir_datasets makes its loggers lazily, each at INFO with its own handler: only the
    # process-wide switch keeps its retries quiet
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    except tuple(network) as err:
        text = str(err)
        host = re.search(r"host='([^']+)'", text)
        reason = (f"cannot reach {host.group(1)}" if host else text.splitlines()[0][:160]) if text else type(err).__name__
        raise OpticalError(f"{key}: download failed ({reason}); it needs the network once (the converted "
                           f"set is then cached under {_cache_root(None)}), or give --task beir --path "
                           f"with a local BEIR folder") from None
    finally:
        logging.disable(previous)


def _ir_dataset(dataset_id: str):
    try:
        import ir_datasets
    except ImportError:
        raise OpticalError("this task needs ir_datasets: pip install 'optical[ir-datasets]'") from None
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise OpticalError(f"ir_datasets has no dataset {dataset_id!r}") from None


class _Record(NamedTuple):
    doc_id: str
    title: str
    text: str


class _Query(NamedTuple):
    query_id: str
    text: str


class _Qrel(NamedTuple):
    query_id: str
    doc_id: str
    relevance: int


class HFBeirSource:
    """A BEIR-layout dataset on the Hugging Face hub, seen through the ir_datasets interface.

    Layout as BeIR/* on the hub: ``NAME`` with configs ``corpus`` (``_id, title, text``)
    and ``queries`` (``_id, text``), and ``NAME-qrels`` with split ``split``
    (``query-id, corpus-id, score``). Needs a network (or a filled HF cache).
    """

    def __init__(self, name: str, split: str = "dev", load_dataset: Callable | None = None):
        self.name, self.split, self._load = name, split, load_dataset

    def _rows(self, *args, **kwargs):
        load = self._load
        if load is None:
            from datasets import load_dataset as load
        try:
            return load(*args, **kwargs)
        except Exception as err:  # datasets raises many types; the user needs one line
            raise OpticalError(f"hf:{self.name}: cannot load {args} ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''})") from None

    def docs_iter(self):
        for row in self._rows(self.name, "corpus", split="corpus"):
            yield _Record(str(row["_id"]), row.get("title") or "", row["text"])

    def queries_iter(self):
        for row in self._rows(self.name, "queries", split="queries"):
            yield _Query(str(row["_id"]), row["text"])

    def qrels_iter(self):
        for row in self._rows(f"{self.name}-qrels", split=self.split):
            yield _Qrel(str(row["query-id"]), str(row["corpus-id"]), int(row["score"]))


def load_mmarco(lang: str, split: str = "dev/small", queries_lang: str = "target",
                max_corpus: int | None = None, seed: int = 0, cache_dir: Path | None = None,
                source: str = "ir_datasets", english_corpus: bool = False,
                dataset=None, english_dataset=None) -> RetrievalTask:
    """mMARCO passage ranking in ``lang`` (ir_datasets ``mmarco/v2/<lang>/<split>``).

    ``source``: ``ir_datasets`` or ``hf:NAME`` (a BEIR-layout hub dataset, see
    :class:`HFBeirSource`). ``queries_lang``: ``target`` (monolingual) or ``en`` (English MS MARCO queries, same
    ids, against target-language passages). ``english_corpus`` also fetches the English
    passages of the kept ids (for the language gap). ``dataset`` injects an object with
    ``docs_iter/queries_iter/qrels_iter`` (tests, or custom mirrors); ``english_dataset``
    likewise stands in for ``msmarco-passage/<split>`` (English queries) and
    ``msmarco-passage`` (``docs_store().get_many`` for English passages).
    """
    if queries_lang not in ("target", "en"):
        raise OpticalError(f"queries_lang must be 'target' or 'en', got {queries_lang!r}")
    if source.startswith("hf:"):
        # A BEIR-layout dataset on the hub has one language only: no English side here.
        if queries_lang == "en" or english_corpus:
            raise OpticalError(f"mmarco from {source}: English queries/corpus need the ir_datasets source")
        dataset = dataset or HFBeirSource(source[3:], split=split.split("/")[0])
    elif source != "ir_datasets":
        raise OpticalError(f"mmarco: unknown source {source!r} (ir_datasets or hf:NAME)")
    dataset_id = f"mmarco/v2/{lang}/{split}"
    key = (f"mmarco-v2-{lang}-{split}-q{queries_lang}-n{max_corpus}-s{seed}-en{int(english_corpus)}"
           + (f"-{source}" if source != "ir_datasets" else ""))

    def build():
        ds = dataset or _ir_dataset(dataset_id)
        query_source = ds.queries_iter()
        if queries_lang == "en":
            english = english_dataset or _ir_dataset(f"msmarco-passage/{split}")
            query_source = english.queries_iter()
        queries, corpus, qrels = convert_ir_dataset(ds.docs_iter(), query_source, ds.qrels_iter(),
                                                    max_corpus=max_corpus, seed=seed)
        corpus_en = None
        if english_corpus:
            store = (english_dataset or _ir_dataset("msmarco-passage")).docs_store()
            corpus_en = {d: _text_of(doc) for d, doc in store.get_many(list(corpus)).items()}
        return queries, corpus, qrels, corpus_en

    folder = _cached_conversion(key, build, cache_dir)
    return load_beir(folder, name=f"mmarco.{lang}" + (".en-queries" if queries_lang == "en" else ""))


def load_wikiclir(lang: str, max_corpus: int | None = None, seed: int = 0,
                  cache_dir: Path | None = None, dataset=None) -> RetrievalTask:
    """WikiCLIR (ir_datasets ``wikiclir/<lang>``): English queries, ``lang`` articles, grades 2/1."""
    key = f"wikiclir-{lang}-n{max_corpus}-s{seed}"

    def build():
        ds = dataset or _ir_dataset(f"wikiclir/{lang}")
        queries, corpus, qrels = convert_ir_dataset(ds.docs_iter(), ds.queries_iter(), ds.qrels_iter(),
                                                    max_corpus=max_corpus, seed=seed)
        return queries, corpus, qrels, None

    return load_beir(_cached_conversion(key, build, cache_dir), name=f"wikiclir.{lang}")


# --------------------------------------------------------------------- bitext retrieval

def load_bitext(path: str | Path, lang: str = "xx") -> list[RetrievalTask]:
    """Translation retrieval on a TSV of ``english<TAB>other`` pairs, both directions.

    Returns ``[en→lang, lang→en]``; each sentence's only relevant document is its mate.
    Duplicate sentences would make the mate ambiguous, so their pairs are each other's
    mates too (every copy is judged relevant).
    """
    path = Path(path)
    if not path.is_file():
        raise OpticalError(f"{path}: file not found")
    english: list[str] = []
    other: list[str] = []
    for number, line in text_lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise OpticalError(f"{where(path, number)}: expected 'english<TAB>other'")
        english.append(parts[0].strip())
        other.append(parts[1].strip())
    if not english:
        raise OpticalError(f"{path}: no sentence pairs")
    ids = [str(i) for i in range(len(english))]

    def qrels_for(targets: list[str]) -> Qrels:
        # All copies of the mate's text are relevant: retrieving an identical copy is not wrong.
        by_text: dict[str, list[str]] = {}
        for i, text in zip(ids, targets):
            by_text.setdefault(text, []).append(i)
        return {i: {j: 1 for j in by_text[text]} for i, text in zip(ids, targets)}

    forward = RetrievalTask(name=f"bitext.en-{lang}", queries=dict(zip(ids, english)),
                            corpus=dict(zip(ids, other)), qrels=qrels_for(other))
    backward = RetrievalTask(name=f"bitext.{lang}-en", queries=dict(zip(ids, other)),
                             corpus=dict(zip(ids, english)), qrels=qrels_for(english),
                             swap_encoders=True)
    return [forward, backward]


# ---------------------------------------------------------------------------- registry

def _beir(path=None, split="test", **_) -> list[RetrievalTask]:
    if path is None:
        raise OpticalError("task beir needs --path FOLDER")
    return [load_beir(path, split=split or "test")]


def _mmarco(lang=None, split=None, max_corpus=None, seed=0, queries_lang="target", path=None, **_):
    if not lang:
        raise OpticalError("task mmarco needs --lang")
    source = str(path) if path is not None and str(path).startswith("hf:") else "ir_datasets"
    return [load_mmarco(lang, split=split or "dev/small", queries_lang=queries_lang,
                        max_corpus=max_corpus, seed=seed, source=source)]


def _wikiclir(lang=None, max_corpus=None, seed=0, **_):
    if not lang:
        raise OpticalError("task wikiclir needs --lang")
    return [load_wikiclir(lang, max_corpus=max_corpus, seed=seed)]


def _bitext(path=None, lang=None, **_):
    if path is None:
        raise OpticalError("task bitext needs --path PAIRS.tsv")
    return load_bitext(path, lang=lang or "xx")


#: task name → loader(**options) → list of tasks. Add ``captions`` here when it lands.
TASKS: dict[str, Callable[..., list[RetrievalTask]]] = {
    "beir": _beir,
    "mmarco": _mmarco,
    "wikiclir": _wikiclir,
    "bitext": _bitext,
}

#: default metrics per task family, where the general default does not fit.
DEFAULT_METRICS: dict[str, list[str]] = {
    "bitext": ["R@1", "R@5", "R@10", "RR"],
}


def load_task(name: str, **options) -> list[RetrievalTask]:
    """Load a registered task by name; options are the loader's keyword arguments."""
    if name not in TASKS:
        raise OpticalError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name](**options)

