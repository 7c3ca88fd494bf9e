"""Look at the token-level OT plans: one pair as a picture, or alignment diagnostics over bitext.

The plans are built as `optical distill` builds them (teacher states of the English side,
student states of the other side, special tokens and the prompt prefix left out, the
recipe's cost, masses, ε and ρ, the same batched Sinkhorn), then either drawn (cost | plan
heatmaps as PNG, the same matrices as an HTML table) or scored:

| score | question | chance |
|---|---|---|
| entropy ratio | how diffuse is the plan? H(T) / log(n·m); 1 = uniform | the independent plan a⊗b |
| identical-token mass share | of an English token's row mass, how much lands on student tokens with the same string (LibreOffice, numbers, identifiers)? | uniform plan: k/m |
| identical-token argmax accuracy | does the row's largest entry sit on such a token? | uniform plan: k/m |
| diagonal offset | is the plan positional? mass-weighted \\|i/n − j/m\\| | uniform plan: ≈ 1/3 |

The scoring functions are pure (tensors in, numbers out); the model side reuses the
training code (`optical.ot.masks.ot_mask`, `optical.ot`).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from optical.errors import OpticalError

if TYPE_CHECKING:
    from optical.models.student import Student
    from optical.models.teacher import Teacher

# Word-piece markers: WordPiece continuation, SentencePiece / byte-level BPE word start.
_PREFIX_MARKERS = ("##",)
_INNER_MARKERS = ("▁", "Ġ")
_SUFFIX_MARKERS = ("</w>",)  # CLIP's BPE word end


# ----------------------------------------------------------------------------- token strings


def surface(token: str) -> str:
    """A token's surface string: lower-cased, WordPiece/SentencePiece/BPE markers stripped.

    >>> surface("##Office"), surface("▁LibreOffice"), surface("calc</w>")
    ('office', 'libreoffice', 'calc')
    """
    for marker in _PREFIX_MARKERS:
        if token.startswith(marker):
            token = token[len(marker):]
    for marker in _SUFFIX_MARKERS:
        if token.endswith(marker):
            token = token[: -len(marker)]
    for marker in _INNER_MARKERS:
        token = token.replace(marker, "")
    return token.lower()


def is_content(text: str) -> bool:
    """At least 3 characters and not punctuation only (short pieces match by accident)."""
    return len(text) >= 3 and any(ch.isalnum() for ch in text)


def identical_token_matches(teacher_tokens: list[str], student_tokens: list[str]) -> torch.Tensor:
    """[n, m] bool: teacher token i and student token j have the same content surface string.

    >>> identical_token_matches(["libre", "##office", "the"], ["▁Libre", "Office", "▁the"]).int().tolist()
    [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    """
    t = [surface(x) for x in teacher_tokens]
    s = [surface(x) for x in student_tokens]
    matches = torch.zeros(len(t), len(s), dtype=torch.bool)
    for i, ti in enumerate(t):
        if is_content(ti):
            for j, sj in enumerate(s):
                matches[i, j] = ti == sj
    return matches


# ----------------------------------------------------------------------------- plan scores


def entropy_ratio(plan: torch.Tensor) -> float:
    """Entropy of plan [n, m] (normalised to total mass 1) over log(n·m), the uniform plan's.

    1 = uniform; a permutation plan of n×n gives 0.5. Example:
    `entropy_ratio(torch.full((3, 4), 1 / 12))` → 1.0.
    """
    n, m = plan.shape
    if n * m <= 1:
        return 1.0  # a single cell: the only plan is the uniform one
    p = plan.double()
    p = p / p.sum().clamp_min(1e-300)
    h = -(p * torch.log(p.clamp_min(1e-300))).sum()  # 0 · log 0 = 0
    return float(h / math.log(n * m))


def diagonal_offset(plan: torch.Tensor) -> float:
    """Mass-weighted mean |(i+½)/n − (j+½)/m| over plan [n, m]: 0 = along the diagonal.

    A positional plan (token i of the English sentence ↔ token at the same relative position
    of the translation) scores near 0; the uniform plan about 1/3.
    Example: `diagonal_offset(torch.eye(4))` → 0.0.
    """
    n, m = plan.shape
    rows = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    cols = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    p = plan.double()
    p = p / p.sum().clamp_min(1e-300)
    return float((p * (rows[:, None] - cols[None, :]).abs()).sum())


def identical_token_scores(plan: torch.Tensor, matches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per teacher token with a same-string student token: (mass share [r], argmax hit [r]).

    | arg | shape |
    |---|---|
    | plan | [n, m] transport plan (teacher rows, student columns) |
    | matches | [n, m] bool, from `identical_token_matches` |
    | returns | two [r] float tensors, r = rows with a match and some mass |

    share_i = Σ_{j matched} T_ij / Σ_j T_ij. hit_i: does the row's argmax land on a matched
    column? Ties are split evenly, so a uniform row scores k_i/m, the chance level.
    Example: plan = eye(3), matches = eye(3).bool() → shares [1, 1, 1], hits [1, 1, 1].
    """
    rows = matches.any(1) & (plan.sum(1) > 0)
    p, hit_cols = plan[rows].double(), matches[rows]
    share = (p * hit_cols).sum(1) / p.sum(1)
    top = torch.isclose(p, p.max(1, keepdim=True).values, rtol=1e-5, atol=0.0)
    hit = (top & hit_cols).sum(1).double() / top.sum(1).double()
    return share.float(), hit.float()


def independent_plan(plan: torch.Tensor) -> torch.Tensor:
    """The plan at ε → ∞ with the same marginals: outer(row sums, column sums) / total mass."""
    return torch.outer(plan.sum(1), plan.sum(0)) / plan.sum().clamp_min(1e-30)


def alignment_report(plans: list[torch.Tensor], matches: list[torch.Tensor]) -> dict[str, float]:
    """Scores over many pairs, next to the uniform plan (chance) and the independent plan a⊗b.

    plans[k]: [n_k, m_k] plan of pair k (real tokens only); matches[k]: [n_k, m_k] bool.
    Entropy and diagonal offset are means over pairs; identical-token scores are means over
    every matched teacher token of every pair (NaN when none matched). Example:
    `alignment_report([torch.eye(3) / 3], [torch.eye(3, dtype=torch.bool)])["argmax_accuracy"]` → 1.0.
    """
    def mean(values: list[torch.Tensor]) -> float:
        joined = torch.cat(values) if values else torch.zeros(0)
        return float(joined.mean()) if len(joined) else float("nan")

    scores = {name: [] for name in ("share", "hit", "share_uniform", "hit_uniform", "share_indep", "hit_indep")}
    entropy, entropy_indep, offset, offset_uniform, offset_indep = [], [], [], [], []
    matched_pairs = 0
    for plan, match in zip(plans, matches):
        plan = plan.detach().cpu().float()
        uniform, indep = torch.ones_like(plan), independent_plan(plan)
        entropy.append(entropy_ratio(plan))
        entropy_indep.append(entropy_ratio(indep))
        offset.append(diagonal_offset(plan))
        offset_uniform.append(diagonal_offset(uniform))
        offset_indep.append(diagonal_offset(indep))
        matched_pairs += bool(match.any())
        for suffix, reference in (("", plan), ("_uniform", uniform), ("_indep", indep)):
            share, hit = identical_token_scores(reference, match)
            scores["share" + suffix].append(share)
            scores["hit" + suffix].append(hit)
    avg = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {
        "pairs": len(plans),
        "entropy_ratio": avg(entropy),
        "entropy_ratio_independent": avg(entropy_indep),
        "diagonal_offset": avg(offset),
        "diagonal_offset_uniform": avg(offset_uniform),
        "diagonal_offset_independent": avg(offset_indep),
        "matched_tokens": sum(len(s) for s in scores["share"]),
        "matched_pairs": matched_pairs,
        "mass_share": mean(scores["share"]),
        "mass_share_uniform": mean(scores["share_uniform"]),
        "mass_share_independent": mean(scores["share_indep"]),
        "argmax_accuracy": mean(scores["hit"]),
        "argmax_accuracy_uniform": mean(scores["hit_uniform"]),
        "argmax_accuracy_independent": mean(scores["hit_indep"]),
    }


# ----------------------------------------------------------------------------- plans from models


@dataclass
class PairPlan:
    """One pair's transport problem on the tokens that take part: cost and plan [n, m]."""

    english: str
    other: str
    teacher_tokens: list[str]
    student_tokens: list[str]
    cost: torch.Tensor
    plan: torch.Tensor


@dataclass
class Aligner:
    """Teacher, student and OT settings of a run; `plans(pairs)` solves them as training does."""

    teacher: Teacher
    student: Student
    ot: dict  # epsilon, rho, max_iter, tol, cost (the token_ot term's settings)
    drop_special: bool
    teacher_idf: torch.Tensor | None
    student_idf: torch.Tensor | None
    masses: str  # what the masses are, for titles and reports
    label: str

    @torch.no_grad()
    def plans(self, pairs: list[tuple[str, str]]) -> list[PairPlan]:
        from optical.ot import cost_matrix, idf_masses, sinkhorn, uniform_masses
        from optical.ot.masks import ot_mask

        for en, other in pairs:
            if not en.strip() or not other.strip():
                raise OpticalError(f"empty sentence in pair ({en!r}, {other!r}): both sides need text")
        device = self.student.head.weight.device
        t = self.teacher(self.teacher.tokenize([p[0] for p in pairs]))
        # The teacher cache stores token states in fp16; round the same way training reads them.
        t_states = t.token_states.to(torch.float16).float().to(device)
        t_ids = t.input_ids.to(device)
        t_mask = ot_mask(t_ids, t.attention_mask.to(device).clone(), set(self.teacher.tokenizer.all_special_ids),
                         self.drop_special)
        features = {k: v.to(device) for k, v in self.student.tokenize([p[1] for p in pairs]).items()}
        s_states, _ = self.student(features)
        s_ids = features["input_ids"]
        s_mask = ot_mask(s_ids, features["attention_mask"], set(self.student.tokenizer.all_special_ids),
                         self.drop_special, self.student.prefix_length())
        a = idf_masses(t_ids, t_mask, self.teacher_idf) if self.teacher_idf is not None else uniform_masses(t_mask)
        b = idf_masses(s_ids, s_mask, self.student_idf) if self.student_idf is not None else uniform_masses(s_mask)
        cost = cost_matrix(t_states, s_states.float(), self.ot["cost"])
        plan = sinkhorn(cost, a, b, self.ot["epsilon"], self.ot["rho"], self.ot["max_iter"], self.ot["tol"]).plan
        out = []
        for k, (en, other) in enumerate(pairs):
            rows, cols = t_mask[k], s_mask[k]
            out.append(PairPlan(
                en, other,
                self.teacher.tokenizer.convert_ids_to_tokens(t_ids[k][rows].tolist()),
                self.student.tokenizer.convert_ids_to_tokens(s_ids[k][cols].tolist()),
                cost[k][rows][:, cols].cpu(), plan[k][rows][:, cols].cpu()))
        return out


def load_aligner(run: str | Path | None = None, teacher: str | None = None, student: str | None = None,
                 overrides: list[str] = ()) -> Aligner:
    """Models and OT settings from a run directory, or from a teacher and a student spec.

    `teacher` replaces the run's teacher model (kind from the recipe, default
    sentence-transformers), `student` the run's student; without a run the recipe defaults
    apply, changed by `overrides` (`ot.epsilon=0.02`). A student without a projection head
    gets the identity head `Student.create` starts from.
    """
    from optical.models.student import Student
    from optical.models.teacher import load_teacher
    from optical.recipe import recipe_from_dict
    from optical.run_dir import load_run

    if run is not None:
        recipe, run_student = load_run(run, list(overrides), require_student=student is None)
        if teacher is not None:
            recipe = replace(recipe, teacher=replace(recipe.teacher, model=teacher))
    elif teacher is None or student is None:
        raise OpticalError("give --run RUN_DIR, or both --teacher MODEL and --student MODEL")
    else:
        recipe = recipe_from_dict({"teacher": {"model": teacher}}, list(overrides), path="<flags>")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t = recipe.teacher
    teacher_model = load_teacher(t.kind, t.model, t.max_length, t.layer, device=device)
    if student is None:
        student_spec = str(run_student)
        student_model = Student.load(student_spec)
    else:
        student_spec = student
        try:
            student_model = Student.load(student_spec)
        except OpticalError:
            # a plain encoder, not a saved student: the untrained identity head
            student_model = Student.create(student_spec, teacher_model.dim, recipe.student.max_length,
                                           recipe.student.prefix, normalize=recipe.student.normalize)
    student_model.to(device).eval()
    teacher_idf, student_idf, masses = _masses(recipe, teacher_model, student_model)
    label = str(run) if run is not None and student is None else f"{teacher_model.spec} → {student_spec}"
    return Aligner(teacher_model, student_model, _ot_settings(recipe), recipe.ot.drop_special_tokens,
                   teacher_idf, student_idf, masses, label)


def _ot_settings(recipe) -> dict:
    """The token_ot term's solver settings: the `ot` section with the term's own overrides."""
    ot = recipe.ot
    settings = dict(epsilon=ot.epsilon, rho=ot.rho, max_iter=ot.max_iter, tol=ot.tol, cost=ot.cost)
    for term in recipe.loss:
        if term.name == "token_ot":
            settings.update({k: v for k, v in term.params.items() if k in settings})
            break
    return settings


def _masses(recipe, teacher, student) -> tuple[torch.Tensor | None, torch.Tensor | None, str]:
    """IDF tables rebuilt from the recipe's training bitext exactly as `distill` does, or
    uniform masses (with the reason) when the recipe says so or the bitext is not here."""
    from optical.data.bitext import read_bitext, split_heldout
    from optical.ot.masses import document_frequencies, idf_table

    if recipe.ot.masses != "idf":
        return None, None, "uniform"
    b = recipe.bitext
    if not b.path or not Path(b.path).is_file():
        return None, None, f"uniform (the recipe's idf needs its bitext {b.path or b.hf_name}, not found)"
    bitext = read_bitext(b.path, b.format, recipe.lang, b.en_column, b.other_column, "skip", max_pairs=b.max_pairs,
                         max_bad_fraction=b.max_bad_fraction)
    train_pairs, _ = split_heldout(bitext.pairs, b.heldout, recipe.train.seed)
    english = teacher.tokenizer([p[0] for p in train_pairs], truncation=True, max_length=teacher.max_length,
                                verbose=False)["input_ids"]
    df, n = document_frequencies(english)
    teacher_idf = idf_table(df, n, len(teacher.tokenizer))
    df, n = document_frequencies(student.tokenizer([p[1] for p in train_pairs], verbose=False)["input_ids"])
    student_idf = idf_table(df, n, len(student.tokenizer))
    return teacher_idf, student_idf, f"idf (from {b.path})"


# ----------------------------------------------------------------------------- diagnostic


def read_pairs(path: str | Path, n: int, lang: str = "vi") -> list[tuple[str, str]]:
    """The first `n` good pairs of a TSV/JSONL bitext; unreadable input is one OpticalError."""
    from optical.data.bitext import read_bitext

    try:
        return read_bitext(path, "auto", lang, max_pairs=n).pairs
    except OSError as err:
        raise OpticalError(f"{path}: cannot read bitext ({err.strerror or err})") from None


def diagnose(aligner: Aligner, pairs: list[tuple[str, str]], batch_size: int = 32) -> dict:
    """`alignment_report` over the plans of `pairs`, with the settings that built them."""
    plans, matches = [], []
    for start in range(0, len(pairs), batch_size):
        for pair in aligner.plans(pairs[start:start + batch_size]):
            plans.append(pair.plan)
            matches.append(identical_token_matches(pair.teacher_tokens, pair.student_tokens))
    report = alignment_report(plans, matches)
    report.update(run=aligner.label, masses=aligner.masses, **{k: aligner.ot[k] for k in ("epsilon", "rho", "cost")})
    return report


def to_json(report: dict) -> str:
    """The report as JSON; NaN (no identical tokens at all) becomes null."""
    import json

    clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in report.items()}
    return json.dumps(clean, indent=2, ensure_ascii=False) + "\n"


def format_report(report: dict) -> str:
    """The diagnostic as a short plain-text table."""
    def f(x):
        return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.3f}"

    r = report
    return "\n".join([
        f"{r['run']}: {r['pairs']} pairs, cost {r['cost']}, ε={r['epsilon']}, ρ={r['rho']}, masses {r['masses']}",
        f"{'':34}{'plan':>8}{'uniform':>10}{'a⊗b':>8}",
        f"{'entropy / log(n·m)':34}{f(r['entropy_ratio']):>8}{f(1.0):>10}{f(r['entropy_ratio_independent']):>8}",
        f"{'diagonal offset |i/n − j/m|':34}{f(r['diagonal_offset']):>8}{f(r['diagonal_offset_uniform']):>10}"
        f"{f(r['diagonal_offset_independent']):>8}",
        f"identical tokens: {r['matched_tokens']} English tokens in {r['matched_pairs']} pairs",
        f"{'  row mass on the same string':34}{f(r['mass_share']):>8}{f(r['mass_share_uniform']):>10}"
        f"{f(r['mass_share_independent']):>8}",
        f"{'  row argmax on the same string':34}{f(r['argmax_accuracy']):>8}{f(r['argmax_accuracy_uniform']):>10}"
        f"{f(r['argmax_accuracy_independent']):>8}",
    ])


# ----------------------------------------------------------------------------- pictures


def figure_class():
    """matplotlib's Figure with the Agg canvas, imported only when a picture is drawn
    (call it before loading models to fail fast)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise OpticalError("drawing the plan needs matplotlib: pip install matplotlib") from None
    return Figure, FigureCanvasAgg


def pair_title(aligner: Aligner, pair: PairPlan) -> str:
    ot = aligner.ot
    return (f"{aligner.label}\ncost {ot['cost']}, ε={ot['epsilon']}, ρ={ot['rho']}, masses {aligner.masses}, "
            f"plan entropy {entropy_ratio(pair.plan):.2f} of uniform")


def render_png(pair: PairPlan, path: str | Path, title: str = "") -> Path:
    """Two heatmaps side by side, cost | plan; rows = teacher tokens, columns = student tokens.
    Dark = low cost / much mass, so both panels show attraction the same way."""
    Figure, FigureCanvasAgg = figure_class()
    n, m = pair.plan.shape
    width, height = max(10.0, 2 * (0.28 * m + 2.0)), max(4.5, 0.28 * n + 2.5)
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    panels = ((pair.cost, "Blues_r", "cost (dark = low)"), (pair.plan, "Blues", "plan (dark = more mass)"))
    for ax, (matrix, cmap, name) in zip(axes, panels):
        image = ax.imshow(matrix.numpy(), cmap=cmap, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(m), pair.student_tokens, rotation=90, fontsize=8)
        ax.set_yticks(range(n), pair.teacher_tokens, fontsize=8)
        ax.set_xlabel("student tokens (other language)")
        ax.set_ylabel("teacher tokens (English)")
        ax.set_title(name)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(title, fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def _table(matrix: torch.Tensor, rows: list[str], cols: list[str], dark_high: bool, fmt: str) -> str:
    lo, hi = float(matrix.min()), float(matrix.max())
    span = hi - lo or 1.0
    head = "".join(f"<th class=c>{html.escape(c)}</th>" for c in cols)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j in range(len(cols)):
            v = float(matrix[i, j])
            t = (v - lo) / span if dark_high else (hi - v) / span
            # white → dark blue; white text on the dark half
            r, g, b = (round(255 + t * (x - 255)) for x in (8, 48, 107))
            color = "#fff" if t > 0.6 else "#000"
            cells.append(f'<td style="background:rgb({r},{g},{b});color:{color}" title="{v:.6g}">{fmt.format(v)}</td>')
        body.append(f"<tr><th>{html.escape(row)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def render_html(pair: PairPlan, path: str | Path, title: str = "") -> Path:
    """The same two matrices as self-contained HTML tables (no scripts, nothing fetched)."""
    style = ("body{font-family:sans-serif;font-size:12px} table{border-collapse:collapse;margin:8px 24px 8px 0}"
             "td{width:2.6em;text-align:center;font-size:10px;padding:2px}"
             "th{font-weight:normal;padding:2px 4px;text-align:right}"
             "th.c{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left}"
             ".panels{display:flex;flex-wrap:wrap;align-items:flex-start}")
    cost = _table(pair.cost, pair.teacher_tokens, pair.student_tokens, dark_high=False, fmt="{:.2f}")
    plan = _table(pair.plan / pair.plan.sum().clamp_min(1e-30) * 100, pair.teacher_tokens, pair.student_tokens,
                  dark_high=True, fmt="{:.1f}")
    text = (f"<!doctype html><html><head><meta charset=utf-8><title>optical align</title><style>{style}</style>"
            f"</head><body><p>{html.escape(title).replace(chr(10), '<br>')}</p>"
            f"<p>English: {html.escape(pair.english)}<br>Other: {html.escape(pair.other)}</p>"
            f"<p>Rows: teacher tokens (English); columns: student tokens.</p><div class=panels>"
            f"<div><h3>cost (dark = low)</h3>{cost}</div>"
            f"<div><h3>plan, % of total mass (dark = more)</h3>{plan}</div></div></body></html>\n")
    from optical.files import atomic_write_text

    path = Path(path)
    atomic_write_text(path, text)
    return path


def picture(aligner: Aligner, english: str, other: str, out: str | Path) -> tuple[Path, Path, PairPlan]:
    """Plan of one pair → `out` as PNG and next to it the same stem as HTML."""
    out = Path(out)
    if not out.parent.is_dir():
        raise OpticalError(f"{out.parent}: output folder not found")
    figure_class()
    pair = aligner.plans([(english, other)])[0]
    title = pair_title(aligner, pair)
    png = render_png(pair, out.with_suffix(".png"), title)
    return png, render_html(pair, out.with_suffix(".html"), title), pair
