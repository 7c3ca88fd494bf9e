"""Per-query scores split by whether the relevant page kept its English title.

A third of each LibreOffice-help CLIR set's pages were never translated past their title: the
English query is, word for word, the title of the page it should find. The teacher matches
those exactly; a student has to carry the English through its head. This splits evaluation
runs' per-query nDCG@10 into those queries ("untranslated") and the rest ("translated"),
averages each query over the runs a label names (seeds), and tests every label against the
first one on each split (paired randomisation over the queries, as ``optical eval --compare``).

Each ``LABEL=PATTERN`` names ``optical eval --out`` folders (a glob; the grid writes them as
``…/seed-N/eval-clir``); ``PATTERN#TASK`` reads another task of the same folders (the
bounds' ``clir[en]`` is the teacher on the English pages). Run from the repository root:

    python -m experiments.title_split data/vi/clir \\
        "quickstart=experiments/results/languages/vi/130/token-ot+mse-lr3e-4-refit-all-pairs/seed-*/eval-clir" \\
        "mse=experiments/results/languages/vi/130/mse-lr3e-4-refit-all-pairs/seed-*/eval-clir"
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optical.data.tasks import load_beir
from optical.errors import OpticalError
from optical.eval.compare import load_per_query, permutation_test

METRIC = "nDCG@10"


@dataclass(frozen=True)
class Runs:
    """One row of the table: a label, the eval folders it averages, the task read in each."""

    label: str
    folders: list[Path]
    task: str = "clir"


def parse_runs(spec: str) -> tuple[str, str, str]:
    """``"LABEL=PATTERN[#TASK]"`` → (label, pattern, task); a malformed one raises OpticalError.

    >>> parse_runs("mse=runs/*/eval-clir")
    ('mse', 'runs/*/eval-clir', 'clir')
    >>> parse_runs("upper=results/vi/bounds#clir[en]")
    ('upper', 'results/vi/bounds', 'clir[en]')
    """
    label, sep, rest = spec.partition("=")
    pattern, _, task = rest.partition("#")
    if not sep or not label.strip() or not pattern.strip():
        raise OpticalError(f"{spec!r}: expected LABEL=PATTERN or LABEL=PATTERN#TASK")
    return label.strip(), pattern.strip(), task.strip() or "clir"


def untranslated_queries(clir: Path) -> set[str]:
    """Query ids whose text is, after trimming, the title of one of their relevant pages."""
    task = load_beir(clir)
    titles = {}
    with (clir / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                titles[str(record["_id"])] = str(record.get("title") or "").strip()
    return {qid for qid, judged in task.qrels.items()
            if any(grade > 0 and titles.get(doc) == task.queries[qid].strip() for doc, grade in judged.items())}


def mean_per_query(runs: Runs) -> dict[str, float]:
    """qid → the query's nDCG@10 averaged over the runs' folders (queries every folder scored)."""
    tables = []
    for folder in runs.folders:
        scores = load_per_query(folder)
        if runs.task not in scores or METRIC not in scores[runs.task]:
            raise OpticalError(f"{folder / 'per_query.json'}: no {runs.task}.{METRIC}")
        tables.append(scores[runs.task][METRIC])
    shared = set.intersection(*(set(t) for t in tables))
    return {qid: float(np.mean([t[qid] for t in tables])) for qid in shared}


def split_table(clir: Path, rows: list[Runs], rounds: int = 10000) -> str:
    """A markdown table: each label's mean on the untranslated, translated and all queries; from
    the second label on, its difference to the first and the paired randomisation p."""
    untranslated = untranslated_queries(clir)
    scores = {runs.label: mean_per_query(runs) for runs in rows}
    shared = sorted(set.intersection(*(set(s) for s in scores.values())))
    if not shared:
        raise OpticalError("the runs share no scored query")
    splits = {"untranslated": [q for q in shared if q in untranslated],
              "translated": [q for q in shared if q not in untranslated], "all": shared}
    header = " | ".join(f"{name} ({len(qids)})" for name, qids in splits.items())
    lines = [f"| {METRIC} | seeds | {header} |", "|---|---:|" + "---:|" * len(splits)]
    first = rows[0].label
    for runs in rows:
        cells = []
        for qids in splits.values():
            if not qids:
                cells.append("–")
                continue
            values = np.array([scores[runs.label][q] for q in qids])
            cell = f"{values.mean():.3f}"
            if runs.label != first:
                base = np.array([scores[first][q] for q in qids])
                delta = f"{100 * (values.mean() - base.mean()):+.1f}"
                if len(qids) < 2:  # no test on a single query
                    cell += f" ({delta})"
                else:
                    cell += f" ({delta}, p {permutation_test(base, values, rounds=rounds):.3f})"
            cells.append(cell)
        lines.append(f"| {runs.label} | {len(runs.folders)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clir", type=Path, help="the BEIR folder the runs were evaluated on (data/LANG/clir)")
    parser.add_argument("runs", nargs="+", help="LABEL=PATTERN[#TASK]: eval folders to average (the first is the baseline)")
    parser.add_argument("--rounds", type=int, default=10000, help="randomisation rounds of each test")
    args = parser.parse_args(argv)
    try:
        rows = []
        for spec in args.runs:
            label, pattern, task = parse_runs(spec)
            folders = sorted(Path(p) for p in glob.glob(pattern))
            if not folders:
                raise OpticalError(f"{label}: no folder matches {pattern!r}")
            rows.append(Runs(label, folders, task))
        print(split_table(args.clir, rows, rounds=args.rounds))
    except OpticalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
