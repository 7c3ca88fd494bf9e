"""Retrieval metrics through ir-measures, and TREC run files.

Runs and qrels are ``{qid: {docid: value}}`` dicts, as ir-measures and pyserini use them.
Metric names are ir-measures names (``nDCG@10``, ``AP@100``, ``RR@10``, ``R@100``, …).
"""

from __future__ import annotations

from pathlib import Path

from optical.errors import OpticalError

DEFAULT_METRICS = ["nDCG@10", "AP@100", "RR@10", "R@10", "R@100"]


def parse_metrics(names: list[str] | str | None) -> list:
    """ir-measures measure objects for ``names`` (list or comma-separated string)."""
    import ir_measures

    if names is None:
        names = DEFAULT_METRICS
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise OpticalError("--metrics: no metric given")
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(name))
        except (NameError, ValueError, SyntaxError):
            raise OpticalError(f"--metrics: unknown metric {name!r} (use ir-measures names, "
                               f"e.g. nDCG@10, AP@100, RR@10, R@100)") from None
    return measures


def search_depth(measures: list, default: int = 1000) -> int:
    """How many documents to retrieve: the largest cutoff, or ``default`` if any has none."""
    cutoffs = [m["cutoff"] if "cutoff" in m.params else None for m in measures]
    if any(c is None for c in cutoffs):
        return default
    return max(cutoffs)


def compute(measures: list, qrels: dict, run: dict) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """→ (mean per metric name, per-query values ``{metric: {qid: value}}``).

    Every judged query counts, including those the run missed (scored 0 by ir-measures),
    so the mean is over the same queries for every system.
    """
    import ir_measures

    aggregate = {str(m): float(v) for m, v in ir_measures.calc_aggregate(measures, qrels, run).items()}
    per_query: dict[str, dict[str, float]] = {str(m): {} for m in measures}
    for row in ir_measures.iter_calc(measures, qrels, run):
        per_query[str(row.measure)][row.query_id] = float(row.value)
    for name in per_query:
        for qid in qrels:
            per_query[name].setdefault(qid, 0.0)
    ordered = {str(m): aggregate.get(str(m), 0.0) for m in measures}
    return ordered, per_query


def write_trec_run(run: dict[str, dict[str, float]], path: str | Path, tag: str = "optical") -> Path:
    """Write a TREC run file: ``qid Q0 docid rank score tag``, best first."""
    from optical.files import atomic_file

    path = Path(path)
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda item: (-item[1], item[0]))
            for rank, (docid, score) in enumerate(ranked, start=1):
                handle.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    return path


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a TREC run file back into ``{qid: {docid: score}}``."""
    path = Path(path)
    if not path.is_file():
        raise OpticalError(f"{path}: file not found")
    run: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise OpticalError(f"{path}:{number}: expected 'qid Q0 docid rank score tag'")
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run
