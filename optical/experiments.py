"""Experiment grids: recipe variants × languages × seeds × budgets → one verdict table.

A grid file (YAML) names a base recipe and what to vary::

    name: cpu-130
    recipe: recipes/vi/quickstart.yaml   # base recipe (path or shipped name)
    data: data/{lang}                    # folder with train.tsv and clir/ (data_prep.libreoffice_help)
    languages: [vi, hi, eu, om]
    seeds: [1, 2, 3]
    budgets: [130]                       # train.steps; "5ep" = train.epochs 5
    baseline: mse                        # every row is tested against this variant
    metric: nDCG@10
    variants:
      warm-start-only: {set: {train.steps: 0}}     # pins its own budget: run once per seed
      mse:             {set: {loss: "mse:1"}}
      token-ot+mse:    {set: {loss: "token_ot:1,mse:100"}}
      mse-maxp:        {eval_of: mse, eval: {passages: "64:32:max"}}   # same runs, other evaluation

Every cell (variant, language, budget, seed) is one ``optical distill`` run in
``<out>/<lang>/<budget>/<variant>/seed-<s>/`` followed by the CLIR evaluation in OPTICAL's
setting (English queries through the teacher, documents through the student). A cell whose
run folder already holds a finished student trained from the same recipe, or whose
evaluation already holds ``per_query.json``, is skipped, so a grid can be stopped and run
again. Per language the teacher is also scored on the English pages (upper bound) and on
the target-language pages (lower bound), so each row reports the share of the language gap
it closes.

The table (``<out>/results.md`` and ``results.json``) gives, per row and language, the mean
over seeds, the spread across seeds (standard deviation of the per-seed means), the
difference to the baseline and the p-value of a paired randomisation test over queries
(per-query values averaged over seeds first; :func:`optical.eval.compare.permutation_test`).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from optical.errors import OpticalError, where
from optical.eval.compare import paired_t_test, permutation_test
from optical.eval.mixture import parse_mixture

GRID_KEYS = ("name", "recipe", "data", "languages", "seeds", "budgets", "baseline", "metric", "variants", "out",
             "set", "keep_students")
VARIANT_KEYS = ("set", "eval", "eval_of")
EVAL_OPTIONS = ("passages", "max_length", "query_encoder", "doc_encoder")  # evaluate() keyword arguments a variant may set
REFERENCES = {"upper": "upper bound (teacher, English pages)", "lower": "lower bound (teacher, target pages)",
              "zero_shot": "zero-shot student, both sides"}


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict = field(default_factory=dict)  # dotted recipe key → value
    eval_options: dict = field(default_factory=dict)  # extra evaluate() arguments
    eval_of: str | None = None  # reuse this variant's runs (only the evaluation differs)

    @property
    def pins_budget(self) -> bool:
        return any(k in self.overrides for k in ("train.steps", "train.epochs"))


@dataclass(frozen=True)
class Grid:
    name: str
    recipe: str
    data: str
    languages: tuple[str, ...]
    seeds: tuple[int, ...]
    budgets: tuple[str, ...]
    baseline: str
    variants: tuple[Variant, ...]
    metric: str = "nDCG@10"
    out: str = "runs/grid"
    overrides: dict = field(default_factory=dict)  # recipe overrides for every cell (before the variant's)
    keep_students: bool = True  # False: delete each student's weights once its evaluations are written
    table: str = "results"  # file name (no suffix) of the table in `out`

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


@dataclass(frozen=True)
class Cell:
    variant: Variant
    lang: str
    budget: str
    seed: int

    @property
    def train_variant(self) -> str:
        return self.variant.eval_of or self.variant.name


def parse_budget(budget: str) -> dict:
    """``"130"`` → ``{"train.steps": 130}``; ``"5ep"`` → ``{"train.steps": None, "train.epochs": 5.0}``."""
    text = str(budget).strip().lower()
    try:
        if text.endswith("ep"):
            epochs = float(text[:-2])
            if epochs > 0 and math.isfinite(epochs):
                return {"train.steps": None, "train.epochs": epochs}
        else:
            steps = int(text)
            if steps >= 0:
                return {"train.steps": steps}
    except ValueError:
        pass
    raise OpticalError(f"budget {budget!r}: expected a step count (130) or epochs (5ep)")


def _list(value, key: str, path: str, kind) -> tuple:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise OpticalError(f"{where(path, None, key)}: must not be empty")
    for item in items:
        if not isinstance(item, kind) or isinstance(item, bool):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise OpticalError(f"{where(path, None, key)}: expected {names} values, got {item!r}")
    return tuple(items)


def _text(data: dict, key: str, path: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise OpticalError(f"{where(path, None, key)}: expected a non-empty string, got {value!r}")
    return value


def grid_from_dict(data: dict, path: str = "<grid>") -> Grid:
    """Validate a grid mapping; every problem is one OpticalError naming the file and key."""
    if not isinstance(data, dict):
        raise OpticalError(f"{path}: a grid must be a YAML mapping")
    for key in data:
        if not isinstance(key, str) or key not in GRID_KEYS:
            raise OpticalError(f"{where(path, None, str(key))}: unknown key (known: {', '.join(GRID_KEYS)})")
    for key in ("recipe", "languages", "seeds", "baseline", "variants"):
        if key not in data:
            raise OpticalError(f"{where(path, None, key)}: missing")
    recipe, baseline = _text(data, "recipe", path), _text(data, "baseline", path)
    name = _text(data, "name", path, Path(path).stem or "grid")
    data_pattern, metric = _text(data, "data", path, "data/{lang}"), _text(data, "metric", path, "nDCG@10")
    out = _text(data, "out", path, f"runs/grid-{name}")
    if "{lang}" not in data_pattern:
        raise OpticalError(f"{where(path, None, 'data')}: must contain {{lang}}, got {data_pattern!r}")
    raw_variants = data["variants"]
    if not isinstance(raw_variants, dict) or not raw_variants:
        raise OpticalError(f"{where(path, None, 'variants')}: expected a mapping of name → settings")
    variants = []
    for variant_name, spec in raw_variants.items():
        key = f"variants.{variant_name}"
        if not isinstance(variant_name, str) or not variant_name or "/" in variant_name:
            raise OpticalError(f"{where(path, None, key)}: a variant name is a non-empty string without '/'")
        spec = spec or {}
        if not isinstance(spec, dict):
            raise OpticalError(f"{where(path, None, key)}: expected a mapping with set / eval / eval_of")
        unknown = [k for k in spec if k not in VARIANT_KEYS]
        if unknown:
            raise OpticalError(f"{where(path, None, f'{key}.{unknown[0]}')}: unknown key "
                               f"(known: {', '.join(VARIANT_KEYS)})")
        overrides, options = spec.get("set") or {}, spec.get("eval") or {}
        if not isinstance(overrides, dict) or not isinstance(options, dict):
            raise OpticalError(f"{where(path, None, key)}: set and eval must be mappings")
        bad = [k for k in options if k not in EVAL_OPTIONS]
        if bad:
            raise OpticalError(f"{where(path, None, f'{key}.eval.{bad[0]}')}: unknown evaluation option "
                               f"(known: {', '.join(EVAL_OPTIONS)})")
        for option in ("query_encoder", "doc_encoder"):  # a bad mixture fails now, not after the training
            if option in options:
                try:
                    parse_mixture(str(options[option]))
                except OpticalError as err:
                    raise OpticalError(f"{where(path, None, f'{key}.eval.{option}')}: {err}") from None
        eval_of = spec.get("eval_of")
        if eval_of is not None and (not isinstance(eval_of, str) or eval_of not in raw_variants or
                                    not isinstance(raw_variants[eval_of] or {}, dict) or (raw_variants[eval_of] or {}).get("eval_of")):
            raise OpticalError(f"{where(path, None, f'{key}.eval_of')}: {eval_of!r} is not a variant that trains")
        if eval_of is not None and overrides:
            raise OpticalError(f"{where(path, None, key)}: eval_of reuses another variant's runs; drop 'set'")
        variants.append(Variant(variant_name, {str(k): v for k, v in overrides.items()}, dict(options), eval_of))
    common = data.get("set") or {}
    if not isinstance(common, dict):
        raise OpticalError(f"{where(path, None, 'set')}: expected a mapping of recipe key → value")
    keep = data.get("keep_students", True)
    if not isinstance(keep, bool):
        raise OpticalError(f"{where(path, None, 'keep_students')}: expected true or false, got {keep!r}")
    if baseline not in raw_variants:
        raise OpticalError(f"{where(path, None, 'baseline')}: {baseline!r} is not one of the variants")
    budgets = tuple(str(b) for b in _list(data.get("budgets", [0]), "budgets", path, (int, str)))  # type: ignore[arg-type]
    for budget in budgets:
        parse_budget(budget)
    languages = _list(data["languages"], "languages", path, str)
    bad_lang = [lang for lang in languages if not lang or "/" in lang or lang.startswith(".")]
    if bad_lang:
        raise OpticalError(f"{where(path, None, 'languages')}: not a language code: {bad_lang[0]!r}")
    return Grid(name=name, recipe=recipe, data=data_pattern, languages=languages,
                seeds=_list(data["seeds"], "seeds", path, int), budgets=budgets, baseline=baseline,
                variants=tuple(variants), metric=metric, out=out,
                overrides={str(k): v for k, v in common.items()}, keep_students=keep)


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise OpticalError(f"{path}: grid file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        mark = getattr(err, "problem_mark", None)
        raise OpticalError(f"{where(path, mark.line + 1 if mark else None)}: invalid grid YAML") from None
    return grid_from_dict(data, str(path))


# ----------------------------------------------------------------------------- cells


def cells(grid: Grid) -> list[Cell]:
    """Every (variant, language, budget, seed); a variant that pins its budget runs once."""
    out = []
    for variant in grid.variants:
        trains = grid.variant(variant.eval_of) if variant.eval_of else variant
        budgets = ["pinned"] if trains.pins_budget else list(grid.budgets)
        for lang in grid.languages:
            for budget in budgets:
                for seed in grid.seeds:
                    out.append(Cell(variant, lang, budget, seed))
    return out


def run_dir(grid: Grid, cell: Cell) -> Path:
    return Path(grid.out) / cell.lang / cell.budget / cell.train_variant / f"seed-{cell.seed}"


def eval_dir(grid: Grid, cell: Cell) -> Path:
    options = cell.variant.eval_options
    suffix = "".join(f"-{k}={v}" for k, v in sorted(options.items()))
    suffix = suffix.replace(":", "_").replace("/", "_").replace("*", "x")  # student+0.3*teacher: no glob character
    return run_dir(grid, cell) / f"eval-clir{suffix}"


def data_dir(grid: Grid, lang: str) -> Path:
    return Path(grid.data.replace("{lang}", lang))


def cell_recipe(grid: Grid, cell: Cell):
    """The base recipe with language, data, seed, budget and the variant's overrides."""
    from optical.recipe import load_recipe
    from optical.recipe_files import find_recipe

    base = Path(grid.recipe)
    if not base.is_file():
        base = find_recipe(grid.recipe)
    trains = grid.variant(cell.train_variant)
    values: dict = {"lang": cell.lang, "name": f"{grid.name}-{cell.lang}-{trains.name}",
                    "bitext.path": str(data_dir(grid, cell.lang) / "train.tsv"),
                    "train.seed": cell.seed, "output_dir": str(run_dir(grid, cell))}
    values.update(grid.overrides)
    if cell.budget != "pinned":
        values.update(parse_budget(cell.budget))
    # "{lang}" in a string value names the cell's language: bitext.path: data/{lang}/pages.tsv
    values.update({k: v.replace("{lang}", cell.lang) if isinstance(v, str) else v for k, v in trains.overrides.items()})
    # JSON is YAML: each value reaches the recipe with its type (a string stays a string).
    return load_recipe(base, [f"{k}={json.dumps(v)}" for k, v in values.items()])


def _trained(folder: Path, recipe) -> bool:
    """A run from exactly this recipe finished here (its student may since have been pruned).
    The stored recipe is read through today's schema, so a key added to optical later (at its
    default) does not make every finished cell look stale."""
    from optical.recipe import recipe_from_dict

    saved = folder / "recipe.yaml"
    if not ((folder / "metrics.json").is_file() and saved.is_file()):
        return False
    try:
        stored = recipe_from_dict(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}, path=str(saved))
    except (OpticalError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return stored == recipe


def run_cells(grid: Grid, group: list[Cell], show_progress: bool = False) -> None:
    """Cells that share one run folder (a variant and its `eval_of` twins): train once unless
    finished, write each missing evaluation, then prune the weights if the grid says so."""
    from optical.eval.retrieval import evaluate
    from optical.training.loop import distill

    folder = run_dir(grid, group[0])
    recipe = cell_recipe(grid, group[0])
    missing = [c for c in group if not (eval_dir(grid, c) / "per_query.json").is_file()]
    trained = _trained(folder, recipe)
    if trained and not missing:
        return
    if not trained or not (folder / "student" / "modules.json").is_file():
        if folder.exists():  # a changed grid, a killed run or pruned weights: train that cell again
            shutil.rmtree(folder)
        distill(recipe, show_progress=show_progress)
        missing = list(group)
    for cell in missing:
        # OPTICAL's setting by default: English queries through the teacher, documents through the student
        options = {"query_encoder": "teacher", "doc_encoder": "student", **cell.variant.eval_options}
        evaluate("beir", path=data_dir(grid, cell.lang) / "clir", student=folder,
                 metrics=[grid.metric], out=eval_dir(grid, cell), **options)
    if not grid.keep_students:
        for name in ("student", "checkpoints"):
            shutil.rmtree(folder / name, ignore_errors=True)


def run_bounds(grid: Grid, lang: str) -> Path:
    """References, once per language: the teacher on both sides (its run on the English pages
    is the upper bound, on the target-language pages the lower bound) and the untrained
    student model on both sides, as it ships (zero-shot)."""
    from optical.eval.retrieval import evaluate

    target = Path(grid.out) / lang / "bounds"
    first = cell_recipe(grid, next(c for c in cells(grid) if c.lang == lang))
    clir = data_dir(grid, lang) / "clir"
    if not (target / "per_query.json").is_file():
        teacher = first.teacher
        if teacher.kind != "sentence-transformers":
            raise OpticalError(f"{grid.recipe}: bounds need a sentence-transformers teacher, got {teacher.kind}")
        evaluate("beir", path=clir, teacher=teacher.model_spec, query_encoder="teacher",
                 doc_encoder="teacher", metrics=[grid.metric], out=target)
    zero_shot = Path(grid.out) / lang / "zero-shot"
    if not (zero_shot / "per_query.json").is_file():
        evaluate("beir", path=clir, query_encoder=first.student.model, doc_encoder=first.student.model,
                 metrics=[grid.metric], out=zero_shot)
    return target


def run_grid(grid: Grid, only: Callable[[Cell], bool] = lambda c: True, show_progress: bool = False,
             log: Callable[[str], None] = print) -> dict:
    """Run every missing cell (cells sharing a run folder train once), then collect the table."""
    # A group is every cell that shares a run folder, even those the filter leaves out: a
    # retrained folder starts empty, so all of its evaluations must be written again.
    groups: dict[Path, list[Cell]] = {}
    for cell in cells(grid):
        groups.setdefault(run_dir(grid, cell), []).append(cell)
    groups = {folder: group for folder, group in groups.items() if any(only(c) for c in group)}
    for i, (folder, group) in enumerate(groups.items(), 1):
        names = ", ".join(c.variant.name for c in group)
        log(f"[{i}/{len(groups)}] {group[0].lang} {group[0].budget} seed {group[0].seed}: {names}")
        run_cells(grid, group, show_progress)
    for lang in dict.fromkeys(c.lang for group in groups.values() for c in group):
        run_bounds(grid, lang)
    return collect(grid)


# ----------------------------------------------------------------------------- the table


def _per_query(folder: Path, metric: str, label_suffix: str = "") -> dict[str, float]:
    data = json.loads((folder / "per_query.json").read_text(encoding="utf-8"))
    labels = [k for k in data if k.endswith(label_suffix)] if label_suffix else [k for k in data if "[" not in k]
    if not labels or metric not in data[labels[0]]:
        raise OpticalError(f"{folder}/per_query.json: no {metric} values")
    return data[labels[0]][metric]


def collect(grid: Grid) -> dict:
    """Rows ``{variant, budget, lang: {mean, std, seeds, diff, p_perm, p_ttest, paired_seeds, gap_closed}}``;
    Δ and p compare with the baseline on the seeds both rows have."""
    metric = grid.metric
    bounds = {}
    for lang in grid.languages:
        folder = Path(grid.out) / lang / "bounds"
        if (folder / "per_query.json").is_file():
            upper = float(np.mean(list(_per_query(folder, metric, "[en]").values())))
            lower = float(np.mean(list(_per_query(folder, metric).values())))
            bounds[lang] = {"upper": upper, "lower": lower}
        if (Path(grid.out) / lang / "zero-shot" / "per_query.json").is_file():
            values = _per_query(Path(grid.out) / lang / "zero-shot", metric)
            bounds.setdefault(lang, {})["zero_shot"] = float(np.mean(list(values.values())))
    # per-query values per seed: {(variant, budget, lang): {seed: {qid: value}}}
    per_query = {}
    for cell in cells(grid):
        folder = eval_dir(grid, cell)
        if not (folder / "per_query.json").is_file():
            continue
        values = _per_query(folder, metric)
        key = (cell.variant.name, cell.budget, cell.lang)
        per_query.setdefault(key, {})[cell.seed] = values
    rows = []
    row_keys = list(dict.fromkeys((v, b) for v, b, _ in per_query))
    for variant, budget in row_keys:
        row = {"variant": variant, "budget": budget, "languages": {}}
        pooled_a, pooled_b = [], []
        for lang in grid.languages:
            key = (variant, budget, lang)
            if key not in per_query:
                continue
            by_seed = {str(s): float(np.mean(list(per_query[key][s].values()))) for s in sorted(per_query[key])}
            seed_means = list(by_seed.values())
            entry = {"mean": float(np.mean(seed_means)), "std": float(np.std(seed_means)),
                     "seeds": sorted(per_query[key]), "seed_means": by_seed}
            if "upper" in bounds.get(lang, {}):
                upper, lower = bounds[lang]["upper"], bounds[lang]["lower"]
                entry["gap_closed"] = (entry["mean"] - lower) / (upper - lower) if upper > lower else None
            base_key = _baseline_key(grid, per_query, budget, lang)
            # Paired on the seeds both have: a seed's warm-start sample and data order are
            # shared by every variant, so comparing across different seeds adds their noise.
            shared = sorted(set(per_query[key]) & set(per_query[base_key])) if base_key else []
            if base_key is not None and base_key != key and shared:
                mean_q = _mean_over_seeds([per_query[key][seed] for seed in shared])
                base_q = _mean_over_seeds([per_query[base_key][seed] for seed in shared])
                qids = sorted(set(mean_q) & set(base_q))
                a = np.array([base_q[q] for q in qids])
                b = np.array([mean_q[q] for q in qids])
                entry.update(diff=float(b.mean() - a.mean()), p_perm=permutation_test(a, b),
                             p_ttest=paired_t_test(a, b), paired_seeds=shared)
                pooled_a.extend(a)
                pooled_b.extend(b)
            row["languages"][lang] = entry
        if row["languages"]:
            means = [e["mean"] for e in row["languages"].values()]
            row["all"] = {"mean": float(np.mean(means))}
            closed = [e.get("gap_closed") for e in row["languages"].values() if e.get("gap_closed") is not None]
            if closed:
                row["all"]["gap_closed"] = float(np.mean(closed))
            if pooled_a and all("diff" in e for e in row["languages"].values()):
                a, b = np.array(pooled_a), np.array(pooled_b)
                row["all"].update(diff=float(b.mean() - a.mean()), p_perm=permutation_test(a, b))
        rows.append(row)
    result = {"grid": grid.name, "metric": metric, "baseline": grid.baseline, "languages": list(grid.languages),
              "seeds": list(grid.seeds), "references": bounds,
              "rows": rows}
    out = Path(grid.out)
    out.mkdir(parents=True, exist_ok=True)
    from optical.files import atomic_write_text

    atomic_write_text(out / f"{grid.table}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / f"{grid.table}.md", format_table(result) + "\n\n" + format_gap_table(result) + "\n")
    return result


def _mean_over_seeds(runs: list[dict[str, float]]) -> dict[str, float]:
    qids = set.intersection(*(set(r) for r in runs))
    return {q: float(np.mean([r[q] for r in runs])) for q in qids}


def _baseline_key(grid: Grid, per_query: dict, budget: str, lang: str):
    """The baseline at the same budget, else its only budget (a pinned baseline)."""
    for b in (budget, "pinned", *grid.budgets):
        if (grid.baseline, b, lang) in per_query:
            return (grid.baseline, b, lang)
    return None


def format_table(result: dict) -> str:
    """Markdown: one row per (variant, budget); per language mean ± seed spread, Δ and p."""
    langs = result["languages"]
    head = ["variant", "budget"] + langs + ["mean", "gap closed"]
    lines = [f"{result['metric']}, mean ± std over seeds {result['seeds']}; Δ and p (paired randomisation "
             f"test over queries, each query averaged over the seeds both rows ran; the seeds are named when "
             f"they are not all of the row's) against `{result['baseline']}`.", "",
             "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(langs) + 2)]
    references = result["references"]
    for key, label in REFERENCES.items():
        values = {lang: references[lang][key] for lang in langs if key in references.get(lang, {})}
        if not values:
            continue
        row = [f"{values[lang]:.3f}" if lang in values else "" for lang in langs]
        lines.append(f"| {label} | – | " + " | ".join(row) + f" | {np.mean(list(values.values())):.3f} | |")
    for row in result["rows"]:
        parts = []
        for lang in langs:
            e = row["languages"].get(lang)
            if e is None:
                parts.append("")
                continue
            text = f"{e['mean']:.3f} ± {e['std']:.3f}" if len(e["seeds"]) > 1 else f"{e['mean']:.3f} (1 seed)"
            if "diff" in e:
                text += f" ({e['diff']:+.3f}, p {e['p_perm']:.3f}" + \
                    (f", seeds {','.join(map(str, e['paired_seeds']))})" if e["paired_seeds"] != e["seeds"] else ")")
            parts.append(text)
        total = row.get("all", {})
        mean_text = f"{total['mean']:.3f}" if total else ""
        if "diff" in total:
            mean_text += f" ({total['diff']:+.3f}, p {total['p_perm']:.3f})"
        closed = f"{100 * total['gap_closed']:.0f} %" if total.get("gap_closed") is not None else ""
        budget = "–" if row["budget"] == "pinned" else row["budget"]
        lines.append(f"| {row['variant']} | {budget} | " + " | ".join(parts) + f" | {mean_text} | {closed} |")
    return "\n".join(lines)


def format_gap_table(result: dict) -> str:
    """Markdown: per row and language the share of the language gap closed,
    (mean − lower bound) / (upper bound − lower bound), with the seeds behind each mean.

    Example: ``| warm-start | – | 53 % (3) | 18 % (2) |``: 53 % on the first language over three seeds."""
    langs = result["languages"]
    lines = ["Share of the language gap closed, (score − lower bound) / (upper bound − lower bound), "
             "mean over seeds (the number of seeds in brackets).", "",
             "| variant | budget | " + " | ".join(langs) + " |", "|---|---|" + "---:|" * len(langs)]
    for row in result["rows"]:
        parts = []
        for lang in langs:
            e = row["languages"].get(lang)
            closed = e.get("gap_closed") if e else None
            parts.append("" if closed is None else f"{100 * closed:.0f} % ({len(e['seeds'])})")
        if any(parts):
            budget = "–" if row["budget"] == "pinned" else row["budget"]
            lines.append(f"| {row['variant']} | {budget} | " + " | ".join(parts) + " |")
    return "\n".join(lines)
