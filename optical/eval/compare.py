"""Compare two evaluation runs query by query (``optical eval --compare A B``).

Each run directory holds ``per_query.json`` (``{task: {metric: {qid: value}}}``, written
by :mod:`optical.eval.retrieval`). For every task and metric both runs share, over the queries
both scored: mean of A, mean of B, B − A, a paired t-test p-value, a paired randomisation
(sign-flip permutation) test p-value (``scipy.stats.permutation_test``), and that p-value
Holm-corrected over the metrics of the task: several metrics are several tests, and the
chance that one of five looks significant by luck is not 5 %. Settings that differ between
the two evaluations (corpus, split, index, passages, …) are reported as warnings: such a
difference, not the model, may explain the change.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from optical.data.jsonl import lone_surrogate
from optical.errors import OpticalError

#: largest per-query value accepted: far beyond any IR metric or count, small enough that
#: means, differences and the t-test's squares stay finite
MAX_VALUE = 1e15


def load_per_query(run_dir: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {metric: {qid: value}}}`` of an ``optical eval --out`` folder; anything else
    (not UTF-8, not JSON, another shape, a value that is not a finite number within
    ±MAX_VALUE) raises OpticalError naming the file and the first bad key."""
    path = Path(run_dir) / "per_query.json"
    if not path.is_file():
        raise OpticalError(f"{path}: file not found (is {run_dir} an 'optical eval --out' folder?)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise OpticalError(f"{path}:{line}: not valid UTF-8") from None
    except json.JSONDecodeError as err:
        raise OpticalError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise OpticalError(f"{path}: not valid JSON (nested too deeply)") from None
    if lone_surrogate(text, data):
        raise OpticalError(f"{path}: a \\u escape is a lone surrogate (not a character)")
    shape = "{task: {metric: {query id: number}}}"
    if not isinstance(data, dict):
        raise OpticalError(f"{path}: expected {shape}, got {type(data).__name__}")
    for task, metrics in data.items():
        if not isinstance(metrics, dict):
            raise OpticalError(f"{path}: {task}: expected {{metric: {{query id: number}}}}, "
                               f"got {type(metrics).__name__}")
        for metric, values in metrics.items():
            if not isinstance(values, dict):
                raise OpticalError(f"{path}: {task}.{metric}: expected {{query id: number}}, "
                                   f"got {type(values).__name__}")
            for qid, value in values.items():
                if not _finite_number(value):
                    raise OpticalError(f"{path}: {task}.{metric}.{qid}: expected a finite number, "
                                       f"got {str(value)[:40]!r}")
                if abs(value) > MAX_VALUE:
                    raise OpticalError(f"{path}: {task}.{metric}.{qid}: expected a metric value within "
                                       f"±{MAX_VALUE:g}, got {str(value)[:40]!r}")
    return data


def _finite_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float range
        return False


def permutation_test(a: np.ndarray, b: np.ndarray, rounds: int = 10000, seed: int = 0) -> float:
    """Two-sided paired randomisation test of mean(B − A): each query's A/B labels are
    swapped at random (the difference's sign flipped); exact when 2^n ≤ `rounds`.

    >>> permutation_test(np.zeros(8), np.ones(8))      # all 256 sign patterns: only ±all as extreme
    0.0078125
    """
    from scipy import stats

    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if not np.any(diff):
        return 1.0
    result = stats.permutation_test((diff,), lambda d, axis=-1: np.mean(d, axis=axis), permutation_type="samples",
                                    n_resamples=rounds, alternative="two-sided", vectorized=True,
                                    random_state=np.random.default_rng(seed))
    return float(result.pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error over the list), same order.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = round(running, 12)
    return adjusted


def paired_t_test(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    if len(a) < 2 or np.allclose(a, b):
        return 1.0
    diff = b - a
    if np.allclose(diff, diff[0]):  # constant non-zero difference: zero variance, maximal evidence
        return 0.0
    return float(stats.ttest_rel(b, a).pvalue)


def compare_runs(run_a: str | Path, run_b: str | Path, rounds: int = 10000, seed: int = 0) -> list[dict]:
    """Rows ``{task, metric, n, mean_a, mean_b, diff, p_ttest, p_perm}`` for shared task/metrics."""
    per_a, per_b = load_per_query(run_a), load_per_query(run_b)
    rows = []
    for task in [t for t in per_a if t in per_b]:
        for metric in [m for m in per_a[task] if m in per_b[task]]:
            values_a, values_b = per_a[task][metric], per_b[task][metric]
            qids = sorted(set(values_a) & set(values_b))
            if not qids:
                continue
            a = np.array([values_a[q] for q in qids], dtype=np.float64)
            b = np.array([values_b[q] for q in qids], dtype=np.float64)
            rows.append(dict(task=task, metric=metric, n=len(qids), mean_a=float(a.mean()),
                             mean_b=float(b.mean()), diff=float(b.mean() - a.mean()),
                             p_ttest=paired_t_test(a, b), p_perm=permutation_test(a, b, rounds, seed)))
    if not rows:
        raise OpticalError(f"{run_a} and {run_b} share no task and metric to compare")
    for task in dict.fromkeys(r["task"] for r in rows):
        family = [r for r in rows if r["task"] == task]
        for row, adjusted in zip(family, holm([r["p_perm"] for r in family])):
            row["p_holm"] = adjusted
    return rows


#: settings of an evaluation that must match for a comparison to be about the models
COMPARABLE = ("task", "path", "lang", "split", "max_corpus", "index", "passages", "doc_max_length",
              "perturb", "perturb_side", "seed")


def setting_differences(run_a: str | Path, run_b: str | Path) -> list[str]:
    """What differs between two evaluations besides the models: their metrics.json settings
    (:data:`COMPARABLE`) and each shared task's corpus size and query count. Empty when
    either folder has no readable metrics.json (older runs)."""
    reports = []
    for run in (run_a, run_b):
        try:
            reports.append(json.loads((Path(run) / "metrics.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return []
    a, b = reports
    if not all(isinstance(r, dict) and isinstance(r.get("settings"), dict) for r in (a, b)):
        return []
    notes = [f"{key}: {a['settings'].get(key)!r} vs {b['settings'].get(key)!r}" for key in COMPARABLE
             if a["settings"].get(key) != b["settings"].get(key)]
    tasks_a, tasks_b = a.get("tasks") or {}, b.get("tasks") or {}
    for task in [t for t in tasks_a if t in tasks_b]:
        for key in ("corpus_size", "n_queries"):
            left, right = (tasks_a[task] or {}).get(key), (tasks_b[task] or {}).get(key)
            if left != right:
                notes.append(f"{task}.{key}: {left!r} vs {right!r}")
    return notes


def format_comparison(rows: list[dict], name_a: str = "A", name_b: str = "B") -> str:
    """Markdown table of :func:`compare_runs` rows."""
    lines = [f"| task | metric | n | {name_a} | {name_b} | diff (B−A) | p (t-test) | p (perm.) | p (perm., Holm) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['metric']} | {r['n']} | {r['mean_a']:.4f} | {r['mean_b']:.4f} "
                     f"| {r['diff']:+.4f} | {r['p_ttest']:.4f} | {r['p_perm']:.4f} | {r['p_holm']:.4f} |")
    lines.append("")
    lines.append("p (perm., Holm): the permutation p-value corrected over the task's metrics (Holm–Bonferroni).")
    return "\n".join(lines)
