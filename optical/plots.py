"""Pictures of runs: training curves from log.jsonl, per-query gains between two evaluations,
a grid's table as bars.

Both are PNG files drawn with matplotlib's Agg canvas (no display needed); matplotlib is
imported only when a picture is drawn, and its absence is one line
(``pip install optical[plots]``). The numbers behind each picture come from functions that
need no matplotlib (:func:`read_curves`, :func:`gains`), so they are tested on their own.

    >>> curves = read_curves_text('{"step": 1, "loss": 0.5, "mse": 0.1, "lr": 1e-05}\\n'
    ...                           '{"step": 1, "heldout": {"acc_other_to_en": 0.25}}\\n')
    >>> curves.losses, curves.lr, curves.heldout
    ({'loss': ([1], [0.5]), 'mse': ([1], [0.1])}, ([1], [1e-05]), {'acc_other_to_en': ([1], [0.25])})
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optical.errors import OpticalError
from optical.files import atomic_file

#: size of the curves picture in inches, and its resolution: 800 × 900 pixels
CURVES_SIZE = (8.0, 9.0)
DPI = 100
#: size of the gains picture per task panel
GAINS_SIZE = (9.0, 3.6)
#: log.jsonl fields of a step record that are not loss terms
NOT_LOSSES = ("step", "lr", "pairs_per_s", "heldout", "final")


def figure_class(what: str = "the picture"):
    """matplotlib's Figure and Agg canvas; one line when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise OpticalError(f"drawing {what} needs matplotlib: pip install matplotlib "
                           f"(or pip install optical[plots])") from None
    return Figure, FigureCanvasAgg


def save_png(fig, path: str | Path) -> Path:
    """Write the figure as PNG, atomically (a temporary name, then a rename)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise OpticalError(f"{path.parent}: output folder not found")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


# ----------------------------------------------------------------------------- training curves


@dataclass
class Curves:
    """Series of a run's log, each as (steps, values): loss terms, learning rate, held-out checks."""

    losses: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    lr: tuple[list[int], list[float]] = field(default_factory=lambda: ([], []))
    heldout: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_curves_text(text: str) -> Curves:
    """Parse log.jsonl text. A step logged twice keeps its last record (and the final
    held-out check, logged at the last step, is that step's check); lines that are not JSON
    objects (a write cut off by a kill) are skipped."""
    steps: dict[int, dict] = {}
    checks: dict[int, dict] = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        if isinstance(record.get("heldout"), dict):
            checks[record["step"]] = record["heldout"]
        elif _number(record.get("loss")):
            steps[record["step"]] = record
    curves = Curves()
    for step in sorted(steps):
        record = steps[step]
        for name, value in record.items():
            if name not in NOT_LOSSES and _number(value):
                xs, ys = curves.losses.setdefault(name, ([], []))
                xs.append(step)
                ys.append(float(value))
        if _number(record.get("lr")):
            curves.lr[0].append(step)
            curves.lr[1].append(float(record["lr"]))
    for step in sorted(checks):
        for name, value in checks[step].items():
            if _number(value):
                xs, ys = curves.heldout.setdefault(name, ([], []))
                xs.append(step)
                ys.append(float(value))
    return curves


def read_curves(run_dir: str | Path) -> Curves:
    """The curves of a run directory's log.jsonl (a run still training, or killed, has them too)."""
    from optical.run_dir import load_run

    run_dir = Path(run_dir)
    load_run(run_dir, require_student=False)  # one line when it is not a run directory
    log = run_dir / "log.jsonl"
    if not log.is_file():
        raise OpticalError(f"{log}: not found; the run has not logged a step yet")
    curves = read_curves_text(log.read_text(encoding="utf-8", errors="replace"))
    if "loss" not in curves.losses:
        raise OpticalError(f"{log}: no training step logged (a --steps 0 run has no curves)")
    return curves


def draw_curves(curves: Curves, out: str | Path, title: str = "", weights: dict[str, float] | None = None) -> Path:
    """Three panels over the step: loss terms (log scale when all are positive), held-out
    accuracy and cosine (MSE to the teacher on its own axis), and the learning rate."""
    Figure, FigureCanvasAgg = figure_class("the training curves")
    weights = weights or {}
    fig = Figure(figsize=CURVES_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_check, ax_lr = fig.subplots(3, 1, sharex=True)
    for name, (xs, ys) in curves.losses.items():
        label = "loss (weighted sum)" if name == "loss" else f"{name} (×{weights[name]:g})" if name in weights else name
        ax_loss.plot(xs, ys, label=label, linewidth=2.0 if name == "loss" else 1.0)
    if all(v > 0 for _, ys in curves.losses.values() for v in ys):
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss and its terms (unweighted)")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)

    shown = {k: v for k, v in curves.heldout.items() if not k.startswith("mse")}
    for name, (xs, ys) in shown.items():
        ax_check.plot(xs, ys, marker="o", markersize=3, label=name)
    mse = {k: v for k, v in curves.heldout.items() if k.startswith("mse")}
    if mse:
        twin = ax_check.twinx()
        for name, (xs, ys) in mse.items():
            twin.plot(xs, ys, color="0.4", linestyle="--", marker="x", markersize=3, label=f"{name} (right)")
        twin.set_ylabel("MSE")
        twin.legend(fontsize=8, loc="lower right")
    if curves.heldout:
        ax_check.legend(fontsize=8, loc="upper left")
    else:
        ax_check.text(0.5, 0.5, "no held-out check logged (bitext.heldout, train.eval_every)",
                      ha="center", va="center", transform=ax_check.transAxes)
    ax_check.set_ylabel("accuracy@1, cosine")
    ax_check.set_title("held-out pairs")
    ax_check.grid(alpha=0.3)

    ax_lr.plot(*curves.lr, color="tab:purple")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_lr.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, out)


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """`optical plot curves RUN_DIR`: draw the run's log into `out` (default RUN_DIR/curves.png)."""
    from optical.recipe import load_recipe

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "curves.png"
    figure_class("the training curves")  # fail before reading anything when matplotlib is missing
    curves = read_curves(run_dir)
    recipe = load_recipe(run_dir / "recipe.yaml")
    weights = {term.name: term.weight for term in recipe.loss}
    return draw_curves(curves, out, f"{recipe.name} ({run_dir}): {recipe.teacher.model_spec} → "
                                    f"{recipe.student.model}, en–{recipe.lang}", weights)


# ----------------------------------------------------------------------------- per-query gains


@dataclass
class Gains:
    """Per-query B − A of one metric on one task, sorted from largest gain to largest loss."""

    task: str
    metric: str
    qids: list[str]
    diffs: np.ndarray

    @property
    def wins(self) -> int:
        return int((self.diffs > 0).sum())

    @property
    def losses(self) -> int:
        return int((self.diffs < 0).sum())

    @property
    def ties(self) -> int:
        return int((self.diffs == 0).sum())


def gains(run_a: str | Path, run_b: str | Path, metric: str | None = None) -> list[Gains]:
    """For every task both evaluation folders scored (clean runs only: not the English-corpus
    or perturbed variants), the per-query difference B − A of `metric` (default: the first
    metric the evaluation lists, its main one: nDCG@10 unless --metrics said otherwise), over
    the queries both scored."""
    from optical.eval.compare import load_per_query

    per_a, per_b = load_per_query(run_a), load_per_query(run_b)
    panels = []
    for task in [t for t in per_a if t in per_b and "[" not in t]:
        shared = [m for m in per_a[task] if m in per_b[task]]
        name = metric if metric is not None else (shared[0] if shared else None)
        if name is None or name not in shared:
            continue
        values_a, values_b = per_a[task][name], per_b[task][name]
        qids = sorted(set(values_a) & set(values_b))
        if not qids:
            continue
        diffs = np.array([values_b[q] - values_a[q] for q in qids], dtype=np.float64)
        order = np.argsort(-diffs, kind="stable")
        panels.append(Gains(task, name, [qids[i] for i in order], diffs[order]))
    if not panels:
        what = f"metric {metric!r} on a task" if metric else "a task and metric"
        raise OpticalError(f"{run_a} and {run_b} share no {what} with queries scored in both")
    return panels


def draw_gains(panels: list[Gains], out: str | Path, name_a: str = "A", name_b: str = "B") -> Path:
    """One bar chart per task: each query's B − A, sorted; gains above zero, losses below."""
    Figure, FigureCanvasAgg = figure_class("the per-query gains")
    fig = Figure(figsize=(GAINS_SIZE[0], GAINS_SIZE[1] * len(panels)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        x = np.arange(len(panel.diffs))
        colors = np.where(panel.diffs > 0, "tab:green", np.where(panel.diffs < 0, "tab:red", "0.6"))
        ax.bar(x, panel.diffs, width=1.0, color=colors, linewidth=0)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_xlabel(f"queries, sorted by difference ({len(x)})")
        ax.set_ylabel(f"{panel.metric}: B − A")
        ax.set_title(f"{panel.task}: {name_b} − {name_a}, {panel.metric} per query; mean {panel.diffs.mean():+.4f}; "
                     f"{panel.wins} better, {panel.losses} worse, {panel.ties} tied", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    return save_png(fig, out)


# ----------------------------------------------------------------------------- grid results


@dataclass
class GridBars:
    """A grid table as bars: `means[v][l]` (None where variant v has no run on language l),
    `stds`, per-seed means `seeds[v][l]`, and per language the references (upper / lower
    bound, zero-shot student) where the grid scored them."""

    metric: str
    languages: list[str]
    variants: list[str]
    means: dict[str, list[float | None]]
    stds: dict[str, list[float | None]]
    seeds: dict[str, list[list[float]]]
    references: dict[str, dict[str, float]]


def read_grid_results(path: str | Path) -> dict:
    """A grid's results.json (a file, or the grid's out folder holding results.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise OpticalError(f"{path}: not found; run `optical grid GRID.yaml --collect-only` first")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise OpticalError(f"{path}: not a grid results file ({str(err).splitlines()[0]})") from None
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list) or "metric" not in result:
        raise OpticalError(f"{path}: not a grid results file (no rows / metric)")
    return result


def grid_bars(result: dict, variants: list[str] | None = None, languages: list[str] | None = None) -> GridBars:
    """The bars of a grid result: the chosen variants (default every row; a variant run at
    several budgets is named `variant@budget`) × the languages any of them ran.

    >>> result = {"metric": "nDCG@10", "languages": ["vi", "eu"], "references": {"vi": {"upper": 0.9}},
    ...           "rows": [{"variant": "a", "budget": "pinned",
    ...                     "languages": {"vi": {"mean": 0.7, "std": 0.01, "seed_means": {"1": 0.69, "2": 0.71}}}}]}
    >>> bars = grid_bars(result)
    >>> bars.languages, bars.means["a"], bars.seeds["a"]
    (['vi'], [0.7], [[0.69, 0.71]])
    """
    rows = {}
    budgets = {}
    for row in result["rows"]:
        budgets.setdefault(row["variant"], []).append(row["budget"])
    for row in result["rows"]:
        name = row["variant"] if len(budgets[row["variant"]]) == 1 else f"{row['variant']}@{row['budget']}"
        rows[name] = row["languages"]
    chosen = list(rows) if not variants else variants
    unknown = [v for v in chosen if v not in rows]
    if unknown:
        raise OpticalError(f"variant {unknown[0]!r} is not in the grid results; rows: {', '.join(rows)}")
    wanted = languages or result.get("languages") or []
    langs = [lang for lang in wanted if any(lang in rows[v] for v in chosen)]
    if not langs:
        raise OpticalError("no results to draw: none of the chosen variants ran on the chosen languages")
    means = {v: [rows[v][l]["mean"] if l in rows[v] else None for l in langs] for v in chosen}
    stds = {v: [rows[v][l].get("std") if l in rows[v] else None for l in langs] for v in chosen}
    seeds = {v: [list(rows[v][l].get("seed_means", {}).values()) if l in rows[v] else [] for l in langs]
             for v in chosen}
    references = {l: dict(result.get("references", {}).get(l, {})) for l in langs}
    return GridBars(result["metric"], langs, chosen, means, stds, seeds, references)


def draw_grid(bars: GridBars, out: str | Path, title: str = "") -> Path:
    """Grouped bars, one group per language: each variant's mean over seeds with the seeds'
    spread (±1 std) and each seed as a dot; the upper and lower bound (teacher on the English
    and on the target pages) as lines across the group, the zero-shot student dotted."""
    Figure, FigureCanvasAgg = figure_class("the grid results")
    n_lang, n_var = len(bars.languages), len(bars.variants)
    fig = Figure(figsize=(max(6.0, 1.2 + n_lang * (0.5 + 0.45 * n_var)), 5.0), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / n_var
    colors = [f"C{i % 10}" for i in range(n_var)]
    for i, variant in enumerate(bars.variants):
        x = np.arange(n_lang) - 0.4 + width * (i + 0.5)
        means = np.array([np.nan if m is None else m for m in bars.means[variant]])
        stds = np.array([0.0 if s is None else s for s in bars.stds[variant]])
        ax.bar(x, means, width=width * 0.92, yerr=stds, capsize=2, color=colors[i], label=variant,
               error_kw={"linewidth": 0.8})
        for xi, seed_values in zip(x, bars.seeds[variant]):
            if len(seed_values) > 1:
                ax.plot([xi] * len(seed_values), seed_values, "o", color="black", markersize=2.5)
        for xi, m in zip(x, means):
            if np.isfinite(m):
                ax.text(xi, m + 0.01, f"{m:.3f}", ha="center", va="bottom", fontsize=7, rotation=90)
    styles = {"upper": ("black", "-", "upper bound"), "lower": ("tab:red", "-", "lower bound"),
              "zero_shot": ("0.4", ":", "zero-shot student")}
    shown = set()
    for j, lang in enumerate(bars.languages):
        for key, (color, style, label) in styles.items():
            value = bars.references[lang].get(key)
            if value is None:
                continue
            ax.hlines(value, j - 0.45, j + 0.45, colors=color, linestyles=style, linewidth=1.2,
                      label=None if key in shown else label)
            shown.add(key)
    ax.set_xticks(np.arange(n_lang), bars.languages)
    ax.set_ylabel(bars.metric)
    values = [m for ms in bars.means.values() for m in ms if m is not None]
    values += [v for refs in bars.references.values() for v in refs.values()]
    ax.set_ylim(max(0.0, min(values) - 0.08), min(1.0, max(values) + 0.08))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return save_png(fig, out)


def plot_grid(path: str | Path, out: str | Path | None = None, variants: list[str] | None = None,
              languages: list[str] | None = None) -> Path:
    """`optical plot grid OUT_FOLDER`: draw the grid's results.json (default OUT_FOLDER/results.png)."""
    figure_class("the grid results")  # fail before reading anything when matplotlib is missing
    path = Path(path)
    result = read_grid_results(path)
    bars = grid_bars(result, variants, languages)
    if out is None:
        out = (path if path.is_dir() else path.parent) / "results.png"
    return draw_grid(bars, out, f"grid {result.get('grid', '')}: {bars.metric}, mean over seeds (dots: seeds)")
