"""LibreOffice help pages (Debian ``libreoffice-help-*``, MPL-2.0) → bitext + a CLIR set.

Every language's help package holds the same pages (``text/<module>/.../<page>.html``
under ``/usr/share/libreoffice/help/<lang>/``), and every paragraph or heading carries
the same ``id`` in every language (``par_id3149489``, ``hd_id3156377``). Pairing the
English and the other page's elements by (page path, element id) gives a clean,
document-level aligned bitext without any aligner.

Outputs (``--out DIR``):

- ``train.tsv``, ``dev.tsv``, ``test.tsv``: ``english<TAB>other``, split by page (a page's
  paragraphs all land in one split), seeded; cleaned with :mod:`data_prep.clean`, the test
  split first so that a pair repeated on many pages is kept in test and dropped elsewhere;
- ``clir/``: a WikiCLIR-style BEIR folder from the test pages: English page titles as
  queries, the other-language pages as the corpus, qrels 2 for the page's own
  translation and 1 for the (test) pages the English page links to, in BEIR's TSV
  (``qrels/test.tsv``) and in TREC format (``qrels/test.trec``); documents are named by
  page id (``swriter/guide/x``), queries by ``q:`` + page id, so no query shares its
  mate's id; ``corpus_en.jsonl`` is the English side of the same corpus, to measure the
  language gap;
- ``clir-dev/``: the same from the dev pages, for choosing settings without looking at
  ``clir/``;
- ``stats.json``: counts of pages, pairs per split and dropped pairs per reason.

Sources: nothing (``apt-get download`` into ``--cache-dir``), or ``--other`` / ``--en``
pointing at ``.deb`` files or unpacked folders. A ``.deb`` is read in place (ar + tar in
Python), so neither dpkg nor unpacking is needed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from data_prep.clean import (
    DEFAULT_MAX_CHRF,
    DEFAULT_MAX_LENGTH_RATIO,
    add_clean_arguments,
    clean_pairs,
    normalize_space,
    run_cli,
    write_tsv,
)
from optical.errors import OpticalError

HELP_PREFIX = "usr/share/libreoffice/help"
ENGLISH = "en-US"
# Elements that hold one translatable unit; their id is the alignment key.
UNIT_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre"})
# Page chrome (navigation, index, debug footer) is the same on every page: not content.
CHROME_TAGS = frozenset({"header", "footer", "aside", "script", "style", "nav"})
# Tags that never get an end tag, so they must not be pushed on the element stack.
VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                       "meta", "param", "source", "track", "wbr"})


# --------------------------------------------------------------------------- parsing

@dataclass
class Page:
    """One help page: its ``<title>``, its id'd units in page order, the pages it links to."""

    title: str = ""
    units: dict[str, str] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    duplicate_ids: int = 0


@dataclass
class _Frame:
    tag: str
    kind: str = ""  # "unit", "chrome", "switch", "case" or "" for plain elements
    case_id: str = ""


class _HelpPageParser(HTMLParser):
    """Streaming extractor for one help page.

    ``switchinline`` spans hold one hidden case per platform or application (``MAC``,
    ``WIN``, ``CALC``...), with the text that JavaScript shows; keeping all of them would
    glue "CommandCtrl" together, so a switch keeps its ``default`` case, else its first.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._stack: list[_Frame] = []
        self._sinks: list[list[str]] = []  # text buffers: units, then nested switch cases
        self._switches: list[list[tuple[str, str]]] = []  # per open switch: (case id, text)
        self._unit_id: str | None = None
        self._chrome = 0
        self._in_title = False
        self._title: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
            return
        if tag == "br":
            self._text(" ")
        if tag in VOID_TAGS:
            return
        a = dict(attrs)
        frame = _Frame(tag)
        if tag in CHROME_TAGS:
            frame.kind = "chrome"
            self._chrome += 1
        elif self._chrome:
            pass
        elif tag == "a" and a.get("href"):
            target = normalize_link(a["href"] or "")
            if target:
                self.page.links.add(target)
        if not self._chrome:
            element_id = a.get("id") or ""
            classes = (a.get("class") or "").split()
            if tag in UNIT_TAGS and element_id and not element_id.startswith("bm_"):
                if self._unit_id is not None:  # unclosed unit (bad HTML): finish it first
                    self._close_unit()
                frame.kind = "unit"
                self._unit_id = element_id
                self._sinks = [[]]
                self._switches = []
            elif self._unit_id is not None and tag == "span" and "switchinline" in classes:
                frame.kind = "switch"
                self._switches.append([])
            elif (self._unit_id is not None and self._switches and self._stack
                  and self._stack[-1].kind == "switch"):
                frame.kind = "case"
                frame.case_id = element_id
                self._sinks.append([])
        self._stack.append(frame)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS and tag != "title":
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
            return
        if not any(frame.tag == tag for frame in self._stack):
            return  # stray end tag
        while self._stack:
            frame = self._stack.pop()
            self._close(frame)
            if frame.tag == tag:
                break

    def _close(self, frame: _Frame) -> None:
        if frame.kind == "chrome":
            self._chrome -= 1
        elif frame.kind == "case" and len(self._sinks) > 1:
            text = "".join(self._sinks.pop())
            if self._switches:
                self._switches[-1].append((frame.case_id, text))
        elif frame.kind == "switch" and self._switches:
            cases = self._switches.pop()
            chosen = next((t for cid, t in cases if cid.startswith("default")),
                          cases[0][1] if cases else "")
            self._text(chosen)
        elif frame.kind == "unit":
            self._close_unit()

    def _close_unit(self) -> None:
        text = normalize_space("".join(part for sink in self._sinks for part in sink))
        unit_id = self._unit_id
        self._unit_id, self._sinks, self._switches = None, [], []
        if unit_id in self.page.units:
            # Embedded sections repeat a unit verbatim (harmless); a different text under
            # the same id makes the alignment ambiguous: keep the first, count it.
            if self.page.units[unit_id] != text:
                self.page.duplicate_ids += 1
        else:
            self.page.units[unit_id] = text

    def _text(self, data: str) -> None:
        if self._sinks:
            self._sinks[-1].append(data)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title.append(data)
        elif self._unit_id is not None and not self._chrome:
            self._text(data)

    def close(self) -> None:
        super().close()
        if self._unit_id is not None:
            self._close_unit()
        self.page.title = normalize_space("".join(self._title))


def normalize_link(href: str) -> str | None:
    """Map an ``href`` to a page key (``text/.../page.html``), or None if not a help page.

    Help pages link as ``<lang>/text/...`` relative to ``<base href>``; dropping everything
    before ``text/`` makes a link language-independent.
    """
    href = href.split("#", 1)[0].split("?", 1)[0]
    if not href.endswith(".html") or ":" in href:
        return None  # external (http:, javascript:) or not a page
    parts = [p for p in href.split("/") if p not in ("", ".")]
    if "text" not in parts:
        return None
    return "/".join(parts[parts.index("text"):])


def parse_page(html_text: str) -> Page:
    """Extract title, id'd units and links from one help page."""
    parser = _HelpPageParser()
    parser.feed(html_text)
    parser.close()
    return parser.page


# --------------------------------------------------------------------------- sources

def _lang_matches(folder: str, lang: str) -> bool:
    return folder.lower().replace("_", "-") == lang.lower().replace("_", "-")


def _page_key(rel: str) -> str | None:
    rel = rel.replace(os.sep, "/")
    return rel if rel.startswith("text/") and rel.endswith(".html") else None


def _read_ar_member(path: Path, prefix: str) -> tuple[str, bytes]:
    """Return (name, bytes) of the first member of an ar archive whose name starts with prefix."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise OpticalError(f"{path}: not a Debian package (no ar archive header)")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset:offset + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise OpticalError(f"{path}: corrupt Debian package (bad ar member header)") from None
        start = offset + 60
        if name.startswith(prefix):
            return name, data[start:start + size]
        offset = start + size + (size % 2)  # members are 2-byte aligned
    raise OpticalError(f"{path}: Debian package without a {prefix}* member")


def _open_data_tar(path: Path) -> tarfile.TarFile:
    name, payload = _read_ar_member(path, "data.tar")
    try:
        return tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")
    except tarfile.ReadError:
        pass
    # zstd (Ubuntu packages) is not in this Python's stdlib; dpkg-deb can still unpack it.
    if shutil.which("dpkg-deb"):
        done = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True)
        if done.returncode == 0:
            return tarfile.open(fileobj=io.BytesIO(done.stdout), mode="r:")
    raise OpticalError(f"{path}: cannot read {name} (compression not supported here; "
                       f"unpack it with dpkg-deb -x and pass the folder)")


def read_deb_pages(path: str | Path, lang: str) -> dict[str, str]:
    """Read ``{page key: html}`` for ``lang`` straight out of a ``.deb``."""
    path = Path(path)
    pattern = re.compile(r"^(?:\./)?" + re.escape(HELP_PREFIX) + r"/([^/]+)/(text/.+\.html)$")
    pages: dict[str, str] = {}
    found_langs: set[str] = set()
    with _open_data_tar(path) as tar:
        for member in tar:
            match = pattern.match(member.name)
            if not match or not member.isfile():
                continue
            found_langs.add(match.group(1))
            if _lang_matches(match.group(1), lang):
                pages[match.group(2)] = tar.extractfile(member).read().decode("utf-8", "replace")
    if not pages:
        have = ", ".join(sorted(found_langs)) or "none"
        raise OpticalError(f"{path}: no help pages for language '{lang}' (languages found: {have})")
    return pages


def find_help_dir(root: str | Path, lang: str) -> Path:
    """Find ``<lang>`` help folder under an unpacked package, a help folder or the folder itself."""
    root = Path(root)
    if not root.is_dir():
        raise OpticalError(f"{root}: no such folder or .deb file")
    for base in (root / HELP_PREFIX, root, root.parent):
        if base.is_dir():
            for child in base.iterdir():
                if _lang_matches(child.name, lang) and (child / "text").is_dir():
                    return child
    if (root / "text").is_dir() and _lang_matches(root.name, lang):
        return root
    raise OpticalError(f"{root}: no LibreOffice help for '{lang}' "
                       f"(expected {HELP_PREFIX}/{lang}/text/ or {lang}/text/ inside)")


def read_folder_pages(root: str | Path, lang: str) -> dict[str, str]:
    """Read ``{page key: html}`` for ``lang`` from an unpacked folder."""
    help_dir = find_help_dir(root, lang)
    pages = {}
    for path in sorted((help_dir / "text").rglob("*.html")):
        key = _page_key(path.relative_to(help_dir).as_posix())
        if key:
            pages[key] = path.read_text(encoding="utf-8", errors="replace")
    if not pages:
        raise OpticalError(f"{help_dir}: no .html pages under text/")
    return pages


def read_pages(source: str | Path, lang: str) -> dict[str, str]:
    """Read help pages for ``lang`` from a ``.deb`` file or an unpacked folder."""
    source = Path(source)
    if source.is_file():
        return read_deb_pages(source, lang)
    return read_folder_pages(source, lang)


def package_name(lang: str) -> str:
    """Debian package name of a help language (``vi`` → ``libreoffice-help-vi``)."""
    return f"libreoffice-help-{lang.lower().replace('_', '-')}"


def apt_download(lang: str, cache_dir: str | Path) -> tuple[Path, Path]:
    """``apt-get download`` the English and ``lang`` help packages (once) into cache_dir."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    names = [package_name(ENGLISH), package_name(lang)]

    def cached(name: str) -> Path | None:
        debs = sorted(cache_dir.glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime)
        return debs[-1] if debs else None

    missing = [n for n in names if cached(n) is None]
    if missing:
        if shutil.which("apt-get") is None:
            raise OpticalError("apt-get not found: download the .deb files elsewhere and pass "
                               "them with --en and --other")
        done = subprocess.run(["apt-get", "download", *missing], cwd=cache_dir,
                              capture_output=True, text=True)
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.startswith("E:")] or \
                done.stderr.strip().splitlines() or ["no output"]
            raise OpticalError(f"apt-get download {' '.join(missing)} failed: {lines[-1]} "
                               f"(try 'apt-get update' first, or pass --en/--other)")
    paths = [cached(n) for n in names]
    if any(p is None for p in paths):
        raise OpticalError(f"apt-get download left no {names} .deb files in {cache_dir}")
    return paths[0], paths[1]


# --------------------------------------------------------------------------- building

def page_id(key: str) -> str:
    """Short stable id of a page key: ``text/swriter/guide/x.html`` → ``swriter/guide/x``."""
    key = key[len("text/"):] if key.startswith("text/") else key
    return key[:-len(".html")] if key.endswith(".html") else key


def query_id(key: str) -> str:
    """CLIR query id of a page: ``q:`` + its page id (``q:swriter/guide/x``).

    Distinct from the page's document id on purpose: BEIR's ``EvaluateRetrieval`` drops
    every retrieved document whose id equals the query id (to ignore self-hits in
    symmetric sets), so queries named like their own translation would lose exactly
    the grade-2 hit.
    """
    return "q:" + page_id(key)


def split_pages(keys: list[str], test_fraction: float, dev_fraction: float,
                seed: int) -> dict[str, list[str]]:
    """Seeded split of page keys into ``train``/``dev``/``test`` (disjoint, sorted)."""
    if not 0 <= test_fraction < 1 or not 0 <= dev_fraction < 1 or test_fraction + dev_fraction >= 1:
        raise OpticalError(f"--test-fraction {test_fraction} and --dev-fraction {dev_fraction} "
                           f"must be in [0, 1) and sum to less than 1")
    order = sorted(keys)
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_fraction)
    n_dev = round(len(order) * dev_fraction)
    if test_fraction > 0 and n_test == 0 and len(order) >= 2:
        n_test = 1  # a tiny input still gets a test page
    return {"test": sorted(order[:n_test]), "dev": sorted(order[n_test:n_test + n_dev]),
            "train": sorted(order[n_test + n_dev:])}


def _write_jsonl(rows: list[dict], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build_clir(english: dict[str, Page], other: dict[str, Page], keys: list[str],
               out_dir: str | Path, translated_only: bool = False) -> dict[str, int]:
    """Write the BEIR folder for ``keys`` (pages present in both languages); return counts.

    ``translated_only`` leaves out pages whose other-language title is still the English
    one (untranslated pages would make the cross-lingual task a lexical one).
    """
    out_dir = Path(out_dir)
    (out_dir / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, corpus_en, queries = [], [], []
    doc_keys = set()
    for key in keys:
        text = " ".join(t for t in other[key].units.values() if t)
        text_en = " ".join(t for t in english[key].units.values() if t)
        if translated_only and other[key].title == english[key].title:
            continue
        if text and text_en:
            doc_keys.add(key)
            corpus.append({"_id": page_id(key), "title": other[key].title, "text": text})
            corpus_en.append({"_id": page_id(key), "title": english[key].title, "text": text_en})
    judgements: list[tuple[str, str, int]] = []
    for key in sorted(doc_keys):
        title = english[key].title
        if not title:
            continue
        queries.append({"_id": query_id(key), "text": title})
        judgements.append((query_id(key), page_id(key), 2))
        for target in sorted(english[key].links & doc_keys - {key}):
            judgements.append((query_id(key), page_id(target), 1))
    n_graded = Counter(grade for _, _, grade in judgements)
    # The same judgements twice: BEIR's TSV (with header) and TREC's `qid 0 docid grade`.
    with (out_dir / "qrels" / "test.tsv").open("w", encoding="utf-8", newline="\n") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{qid}\t{docid}\t{grade}\n" for qid, docid, grade in judgements)
    with (out_dir / "qrels" / "test.trec").open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{qid} 0 {docid} {grade}\n" for qid, docid, grade in judgements)
    _write_jsonl(queries, out_dir / "queries.jsonl")
    _write_jsonl(corpus, out_dir / "corpus.jsonl")
    _write_jsonl(corpus_en, out_dir / "corpus_en.jsonl")
    # Untranslated pages (English text in the other language's package) make retrieval
    # lexical; counted so that a reader can judge the set.
    same_title = sum(1 for key in doc_keys if other[key].title == english[key].title)
    return {"queries": len(queries), "corpus": len(corpus), "qrels_score_2": n_graded[2],
            "qrels_score_1": n_graded[1], "docs_with_untranslated_title": same_title}


def page_text(page: Page) -> str:
    """A page as one document, as the CLIR corpus and BEIR's loader make it: "title text"."""
    text = " ".join(t for t in page.units.values() if t)
    return normalize_space(f"{page.title} {text}" if page.title else text)


def write_page_pairs(english: dict[str, Page], other: dict[str, Page], keys: list[str], out_dir: Path) -> int:
    """Document-level pairs of the training pages: ``pages.tsv`` (each whole page, English and
    other) and ``train+pages.tsv`` (``train.tsv`` followed by them). Retrieval scores pages, so
    training on pages teaches the student what the evaluation encodes; returns how many."""
    pairs = []
    for key in keys:
        en, xx = page_text(english[key]), page_text(other[key])
        if en and xx:
            pairs.append((en, xx))
    write_tsv(pairs, out_dir / "pages.tsv")
    sentences = (out_dir / "train.tsv").read_text(encoding="utf-8")
    with (out_dir / "train+pages.tsv").open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(sentences)
        handle.write((out_dir / "pages.tsv").read_text(encoding="utf-8"))
    return len(pairs)


def prepare(english_pages: dict[str, str], other_pages: dict[str, str], out_dir: str | Path, *,
            test_fraction: float = 0.1, dev_fraction: float = 0.05, seed: int = 13,
            max_length_ratio: float = DEFAULT_MAX_LENGTH_RATIO,
            max_chrf: float = DEFAULT_MAX_CHRF, clir_translated_only: bool = False) -> dict:
    """Pair, split, clean and write everything for raw ``{page key: html}`` maps; return stats."""
    started = time.perf_counter()
    english = {k: parse_page(v) for k, v in english_pages.items()}
    other = {k: parse_page(v) for k, v in other_pages.items()}
    parse_seconds = time.perf_counter() - started

    alignment_drops = Counter(missing_page=0, missing_in_target=0, duplicate_id=0)
    raw_pairs: dict[str, list[tuple[str, str]]] = {}
    for key, page in english.items():
        alignment_drops["duplicate_id"] += page.duplicate_ids
        mate = other.get(key)
        if mate is None:
            alignment_drops["missing_page"] += len(page.units)
            continue
        pairs = []
        for unit_id, text in page.units.items():
            if unit_id in mate.units:
                pairs.append((text, mate.units[unit_id]))
            else:
                alignment_drops["missing_in_target"] += 1
        raw_pairs[key] = pairs

    paired_keys = [k for k, pairs in raw_pairs.items() if pairs]
    splits = split_pages(paired_keys, test_fraction, dev_fraction, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[str, str]] = set()
    pair_counts, drops_per_split, cleaning_drops = {}, {}, Counter()
    for split in ("test", "dev", "train"):  # test first: repeats are dropped from train
        candidates = [pair for key in splits[split] for pair in raw_pairs[key]]
        kept, dropped = clean_pairs(candidates, max_length_ratio=max_length_ratio,
                                    max_chrf=max_chrf, seen=seen, normalize=False)
        write_tsv(kept, out_dir / f"{split}.tsv")
        pair_counts[split] = len(kept)
        drops_per_split[split] = dict(dropped)
        cleaning_drops.update(dropped)
    page_pairs = write_page_pairs(english, other, splits["train"], out_dir)
    clir = build_clir(english, other, splits["test"], out_dir / "clir",
                      translated_only=clir_translated_only)
    # The same set from the dev pages: choose settings there, report on clir/ once.
    clir_dev = build_clir(english, other, splits["dev"], out_dir / "clir-dev",
                          translated_only=clir_translated_only)

    stats = {
        "pages": {
            "english": len(english),
            "other": len(other),
            "paired": len(paired_keys),
            "missing_in_target": sum(1 for k in english if k not in other),
            "only_in_target": sum(1 for k in other if k not in english),
            **{split: len(keys) for split, keys in splits.items()},
        },
        "pairs": {**pair_counts, "train_pages": page_pairs},
        "candidate_pairs": sum(len(p) for p in raw_pairs.values()),
        "dropped": {**dict(alignment_drops), **dict(cleaning_drops)},
        "dropped_per_split": drops_per_split,
        "clir": clir,
        "clir_dev": clir_dev,
        "settings": {"test_fraction": test_fraction, "dev_fraction": dev_fraction, "seed": seed,
                     "max_length_ratio": max_length_ratio, "max_chrf": max_chrf,
                     "clir_translated_only": clir_translated_only},
        "seconds": {"parse": round(parse_seconds, 2),
                    "total": round(time.perf_counter() - started, 2)},
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def default_cache_dir() -> Path:
    base = os.environ.get("OPTICAL_CACHE") or Path.home() / ".cache" / "optical"
    return Path(base) / "debs"


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.libreoffice_help",
        description="Build bitext (split by page) and a CLIR set from LibreOffice help pages.",
    )
    parser.add_argument("--lang", required=True, help="help language, e.g. vi, km, zh-CN")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--other", help="the --lang help: a .deb file or an unpacked folder "
                                        "(default: apt-get download it)")
    parser.add_argument("--en", help="the English (en-US) help: a .deb or folder "
                                     "(default: same as --other, or apt-get download)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where apt-get downloads go (default $OPTICAL_CACHE/debs or "
                             "~/.cache/optical/debs)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of pages in test")
    parser.add_argument("--dev-fraction", type=float, default=0.05, help="share of pages in dev")
    parser.add_argument("--seed", type=int, default=13, help="page split seed")
    parser.add_argument("--clir-translated-only", action="store_true",
                        help="leave test pages whose title is untranslated out of clir/")
    add_clean_arguments(parser)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if args.other is None and args.en is None:
        en_source, other_source = apt_download(args.lang, args.cache_dir or default_cache_dir())
    else:
        other_source = args.other or args.en
        en_source = args.en or args.other
    english_pages = read_pages(en_source, ENGLISH)
    other_pages = read_pages(other_source, args.lang)
    read_seconds = time.perf_counter() - started
    stats = prepare(english_pages, other_pages, args.out, test_fraction=args.test_fraction,
                    dev_fraction=args.dev_fraction, seed=args.seed,
                    max_length_ratio=args.max_length_ratio, max_chrf=args.max_chrf,
                    clir_translated_only=args.clir_translated_only)
    stats["seconds"]["read"] = round(read_seconds, 2)
    stats["seconds"]["total"] = round(time.perf_counter() - started, 2)
    (args.out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    p = stats["pages"]
    print(f"{p['paired']} paired pages -> train {stats['pairs']['train']}, dev "
          f"{stats['pairs']['dev']}, test {stats['pairs']['test']} pairs; CLIR "
          f"{stats['clir']['queries']} queries / {stats['clir']['corpus']} docs; "
          f"{stats['seconds']['total']} s; details in {args.out / 'stats.json'}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
