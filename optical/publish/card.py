"""The model card of a run's student: sentence-transformers' own card, plus what optical knows.

A finished run's ``student/README.md`` is sentence-transformers' model card (its
``SentenceTransformerModelCardData``: languages, licence, base model, datasets, tags; the
architecture, the usage snippet) with one section added between two markers: the teacher,
the base student, the languages, the bitext, the losses, the licence note, the held-out
checks, the retrieval evaluations found in the run (``<run>/eval*/metrics.json``, written by
``optical eval RUN_DIR``) and the recipe in full.

:func:`refresh_card` rewrites that section from the run as it is now (``optical card
RUN_DIR``; ``optical eval RUN_DIR`` and ``optical push`` call it too), without loading the
model; a student saved without the markers gets the whole card generated.

    >>> license_of("packaged:multilingual-e5-small"), license_of("my/own-model")
    ('mit', None)
    >>> hub_id("packaged:all-minilm-l6-v2"), hub_id("xlm-roberta-base"), hub_id("/models/x")
    ('sentence-transformers/all-MiniLM-L6-v2', 'xlm-roberta-base', None)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from optical.errors import OpticalError
from optical.files import atomic_write_text
from optical.recipe import Recipe

START = "<!-- optical: distillation (rewritten by `optical card`) -->"
END = "<!-- optical: end -->"
#: sentence-transformers' placeholder for the hub id in its usage snippet; `optical push` fills it in
MODEL_ID_PLACEHOLDER = "sentence_transformers_model_id"

#: model spec → (hub id, licence) for the models optical ships or its recipes name
KNOWN_MODELS = {
    "packaged:multilingual-e5-small": ("intfloat/multilingual-e5-small", "mit"),
    "intfloat/multilingual-e5-small": ("intfloat/multilingual-e5-small", "mit"),
    "packaged:all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
    "sentence-transformers/all-MiniLM-L6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
    "packaged:all-mpnet-base-v2": ("sentence-transformers/all-mpnet-base-v2", "apache-2.0"),
    "sentence-transformers/all-mpnet-base-v2": ("sentence-transformers/all-mpnet-base-v2", "apache-2.0"),
    "xlm-roberta-base": ("xlm-roberta-base", "mit"),
    "FacebookAI/xlm-roberta-base": ("FacebookAI/xlm-roberta-base", "mit"),
}

OPTICAL_CITATION = (
    "@inproceedings{huang2023optical,\n"
    '    title = "Improving Cross-lingual Information Retrieval on Low-Resource Languages via Optimal Transport '
    'Distillation",\n'
    '    author = "Huang, Zhiqi and Yu, Puxuan and Allan, James",\n'
    '    booktitle = "Proceedings of the Sixteenth ACM International Conference on Web Search and Data Mining '
    '(WSDM \'23)",\n'
    '    year = "2023",\n'
    '    url = "https://arxiv.org/abs/2301.12566",\n'
    "}")


def hub_id(spec: str | None) -> str | None:
    """The Hugging Face hub id a model spec stands for, or None (a local folder, unknown)."""
    if not spec:
        return None
    if spec in KNOWN_MODELS:
        return KNOWN_MODELS[spec][0]
    if spec.startswith(("packaged:", ".", "/", "~")) or Path(spec).expanduser().exists():
        return None
    return spec if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec) else None


def license_of(spec: str | None) -> str | None:
    """The licence of a base model optical knows (hub licence identifier), else None."""
    return KNOWN_MODELS[spec][1] if spec in KNOWN_MODELS else None


def _model_label(spec: str) -> str:
    hub = hub_id(spec)
    return f"`{spec}` ({hub})" if hub and hub != spec else f"`{spec}`"


def _short(spec: str) -> str:
    return (hub_id(spec) or spec).rstrip("/").split("/")[-1].split(":")[-1]


# ----------------------------------------------------------------------------- what the run holds


def read_summary(run_dir: Path) -> dict:
    """The run's metrics.json (held-out checks, steps, pairs), {} when absent or unreadable."""
    try:
        data = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_evaluations(run_dir: Path) -> list[tuple[str, dict]]:
    """Every ``<run>/eval*/metrics.json`` an ``optical eval`` wrote: [(folder name, report)],
    sorted by folder; unreadable or foreign files are left out."""
    found = []
    for path in sorted(Path(run_dir).glob("eval*/metrics.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and isinstance(report.get("tasks"), dict) and report["tasks"]:
            found.append((path.parent.name, report))
    return found


def evaluation_table(evaluations: list[tuple[str, dict]]) -> str:
    """One markdown table per evaluation folder: task, encoders, every metric."""
    blocks = []
    for folder, report in evaluations:
        settings = report.get("settings") or {}
        tasks = report["tasks"]
        names = [str(m) for m in settings.get("metrics") or next(iter(tasks.values())).get("metrics", {})]
        where = settings.get("path") or settings.get("lang") or ""
        head = f"`{folder}`: {settings.get('task', '?')}" + (f" `{where}`" if where else "")
        if settings.get("perturb"):
            head += f", perturbations {', '.join(settings['perturb'])} ({settings.get('perturb_side')})"
        lines = [head, "", "| task | queries → documents | queries | documents | " + " | ".join(names) + " |",
                 "|---|---|---:|---:|" + "---:|" * len(names)]
        for name, entry in tasks.items():
            values = entry.get("metrics") or {}
            cells = [f"{values[m]:.4f}" if isinstance(values.get(m), (int, float)) else "–" for m in names]
            lines.append(f"| {name} | {entry.get('query_encoder', '?')} → {entry.get('doc_encoder', '?')} "
                         f"| {entry.get('n_queries', '?')} | {entry.get('corpus_size', '?')} | "
                         + " | ".join(cells) + " |")
            if isinstance(entry.get("english"), dict):
                english = entry["english"]
                cells = [f"{english[m]:.4f}" if isinstance(english.get(m), (int, float)) else "–" for m in names]
                lines.append(f"| {name}, English documents | teacher → teacher | {entry.get('n_queries', '?')} "
                             f"| {entry.get('corpus_size', '?')} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# ----------------------------------------------------------------------------- the section


def _bitext_line(recipe: Recipe, summary: dict) -> str:
    b = recipe.bitext
    if b.path:
        source = f"`{b.path}`" + (f" ({b.format})" if b.format != "auto" else "")
    else:
        source = f"[{b.hf_name}](https://huggingface.co/datasets/{b.hf_name})"
        source += f", config `{b.hf_config}`" if b.hf_config else ""
        source += f", split `{b.hf_split}`"
    counts = []
    if summary.get("train_pairs") is not None:
        counts.append(f"{summary['train_pairs']} training pairs")
    if summary.get("heldout_pairs"):
        counts.append(f"{summary['heldout_pairs']} held out")
    if b.max_pairs:
        counts.append(f"at most {b.max_pairs} read")
    return source + (f" ({', '.join(counts)})" if counts else "")


def _license_line(recipe: Recipe, license: str | None) -> str:
    base = recipe.student.model
    if license:
        known = license_of(base)
        origin = "the base model's licence" if known == license else "set for this card"
        text = f"`{license}` ({origin})"
    else:
        text = (f"not known to optical: the base model {_model_label(base)} sets it; check its licence and "
                f"set it with `optical card RUN_DIR --license ID` before publishing")
    return text + "; the teacher's terms and the bitext's licence may bind the weights too"


def _usage(recipe: Recipe, model_id: str) -> str:
    teacher = recipe.teacher
    lang = recipe.lang
    lines = ["```python", "from sentence_transformers import SentenceTransformer", ""]
    if recipe.saved_layers != "last":
        # the folder's layer_concat.py (optical's LayerConcat) is the "remote code" trusted here
        lines += ["# trust_remote_code: the folder's layer_concat.py puts several layers side by side",
                  f'student = SentenceTransformer("{model_id}", trust_remote_code=True)']
    else:
        lines += [f'student = SentenceTransformer("{model_id}")']
    if teacher.kind == "sentence-transformers":
        spec = teacher.model_spec
        lines += [f'teacher = SentenceTransformer("{hub_id(spec) or spec}")  # the frozen English teacher', "",
                  f"# OPTICAL's setting: English queries through the teacher, {lang} documents through the student",
                  'queries = teacher.encode_query(["..."])',
                  'documents = student.encode_document(["..."])',
                  "scores = student.similarity(queries, documents)",
                  f"# or {lang} (and English) queries through the student: student.encode_query([...])"]
    else:
        lines += ["", f'documents = student.encode_document(["..."])  # {lang} text in the teacher\'s space',
                  f"# English queries: the {teacher.kind} teacher's text embeddings ({teacher.model_spec})"]
    lines.append("```")
    return "\n".join(lines)


def render_section(recipe: Recipe, run_dir: Path, license: str | None, summary: dict | None = None,
                   model_id: str = MODEL_ID_PLACEHOLDER) -> str:
    """The optical section of the card (between the markers), from the recipe and the run."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir) if summary is None else summary
    teacher = recipe.teacher
    layer = "" if teacher.layer == -1 else f", token states of layer {teacher.layer}"
    losses = ", ".join(f"{t.name} ×{t.weight:g}" for t in recipe.loss)
    t = recipe.train
    steps = summary.get("steps", t.steps)
    budget = (f"{steps} steps × {t.batch_size * t.grad_accum} pairs" if steps is not None
              else f"{t.epochs:g} epochs × {t.batch_size * t.grad_accum} pairs")
    warm = "none" if recipe.warm_start.method == "none" else f"{recipe.warm_start.method} (closed form, before step 1)"
    rows = [
        ("base model (student)", f"{_model_label(recipe.student.model)}, max {recipe.student.max_length} tokens"
                                 + (f", prompt `{recipe.student.prefix}`" if recipe.student.prefix else "")),
        ("teacher (frozen, English)", f"{teacher.kind} {_model_label(teacher.model_spec)}{layer}"),
        ("languages", f"en, {recipe.lang}"),
        ("bitext", _bitext_line(recipe, summary)),
        ("losses", losses + (f"; OT ε {recipe.ot.epsilon:g}, {recipe.ot.masses} masses, {recipe.ot.cost} cost"
                             if any(term.name == "token_ot" for term in recipe.loss) else "")),
        ("training", f"{budget}, lr {t.lr:g}" + (f" (head {t.head_lr:g})" if t.head_lr else "")
                     + f", seed {t.seed}; warm start: {warm}"),
        ("licence", _license_line(recipe, license)),
    ]
    method = ("token-level optimal transport (OPTICAL, Huang et al., WSDM 2023)"
              if any(term.name == "token_ot" for term in recipe.loss) else "the losses below")
    parts = [START, "", "## Distillation", "",
             f"Distilled with optical: a frozen English teacher taught this multilingual student on "
             f"English–{recipe.lang} bitext with {method}, so {recipe.lang} text lands in the teacher's "
             f"embedding space. `encode`, `encode_query` and `encode_document` of this folder give exactly "
             f"the embeddings optical's evaluation scores.", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
             "### Usage", "", _usage(recipe, model_id), ""]
    heldout = summary.get("heldout") if isinstance(summary.get("heldout"), dict) else {}
    if heldout:
        parts += ["### Held-out check", "",
                  f"On {summary.get('heldout_pairs', '?')} bitext pairs kept out of training (accuracy@1 of "
                  f"translation retrieval both ways and teacher English → student; MSE and cosine to the teacher):",
                  "", "| " + " | ".join(heldout) + " |", "|" + "---:|" * len(heldout),
                  "| " + " | ".join(f"{v:.4f}" for v in heldout.values()) + " |", ""]
    evaluations = read_evaluations(run_dir)
    parts += ["### Evaluation", ""]
    if evaluations:
        parts += [evaluation_table(evaluations), ""]
    else:
        parts += ["No retrieval evaluation in the run yet (`optical eval RUN_DIR` adds one here).", ""]
    parts += ["### Recipe", "", "<details><summary>recipe.yaml</summary>", "", "```yaml",
              recipe.to_yaml().rstrip(), "```", "", "</details>", "", END]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- whole cards


def generate_card(model, recipe: Recipe, run_dir: Path, license: str | None = None,
                  summary: dict | None = None) -> str:
    """The whole card of a student (`model`, a SentenceTransformer): sentence-transformers'
    card from its ModelCardData (nothing looked up on the hub) with the optical section
    inserted after its first paragraph."""
    from sentence_transformers.base.model_card import generate_model_card

    license = license or license_of(recipe.student.model)
    data = model.model_card_data
    data.local_files_only = True  # no hub lookups: the card is written offline
    data.generate_widget_examples = False
    data.language = ["en", recipe.lang] if recipe.lang != "en" else ["en"]
    data.license = license
    data.model_name = (f"{_short(recipe.student.model)} distilled from {_short(recipe.teacher.model_spec)} "
                       f"for English–{recipe.lang} retrieval")
    data.base_model = hub_id(recipe.student.model)
    data.datasets = [recipe.bitext.hf_name] if recipe.bitext.hf_name and not recipe.bitext.path else []
    data.ir_model = True  # queries and documents: the usage snippet shows encode_query / encode_document
    data.add_tags(["optical", "cross-lingual-retrieval", "knowledge-distillation"])
    if any(term.name == "token_ot" for term in recipe.loss):
        data.citations = {**(data.citations or {}), "OPTICAL": OPTICAL_CITATION}
    text = generate_model_card(model)
    section = render_section(recipe, run_dir, license, summary)
    anchor = text.find("\n## Model Details")
    if anchor < 0:
        return text.rstrip("\n") + "\n\n" + section + "\n"
    return text[:anchor] + "\n" + section + "\n" + text[anchor:]


def write_card(model, recipe: Recipe, run_dir: Path, student_dir: Path, license: str | None = None,
               summary: dict | None = None) -> Path:
    """Generate the card and write it (atomically) as `student_dir/README.md`."""
    path = Path(student_dir) / "README.md"
    atomic_write_text(path, generate_card(model, recipe, run_dir, license, summary))
    return path


def card_license(text: str) -> str | None:
    """The `license:` of a card's YAML front matter, else None."""
    from huggingface_hub import ModelCard

    try:
        return ModelCard(text, ignore_metadata_errors=True).data.to_dict().get("license")
    except Exception:  # a hand-edited card: its licence is not ours to guess
        return None


def _with_license(text: str, license: str) -> str:
    from huggingface_hub import ModelCard

    card = ModelCard(text, ignore_metadata_errors=True)
    card.data.license = license
    return str(card)


def refresh_card(run_dir: str | Path, license: str | None = None) -> Path:
    """Rewrite the card of a finished run's student from the run as it is now (evaluations,
    licence); the model is loaded only when the card has no optical section yet."""
    from optical.run_dir import load_run

    run_dir = Path(run_dir)
    recipe, student_dir = load_run(run_dir)
    path = student_dir / "README.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if START in text and END in text:
        license = license or card_license(text)
        if license:
            text = _with_license(text, license)
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        atomic_write_text(path, head + render_section(recipe, run_dir, license) + tail)
        return path
    from optical.models.student import load_sentence_transformer

    try:
        model = load_sentence_transformer(student_dir, device="cpu", local_files_only=True)
    except (OSError, ValueError) as err:
        raise OpticalError(f"{student_dir}: cannot load the student to write its card "
                           f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    return write_card(model, recipe, run_dir, student_dir, license or card_license(text))


def card_for_hub(text: str, model_id: str) -> str:
    """The card as uploaded to `model_id`: the usage snippets name the repository."""
    return text.replace(MODEL_ID_PLACEHOLDER, model_id)


def refresh_after_eval(student: str | Path | None, out: str | Path | None) -> Path | None:
    """After `optical eval`: when the evaluation was written into the student's run directory
    (`RUN/eval*`), refresh that run's card; returns the card's path, else None."""
    from optical.run_dir import is_run_dir

    if student is None or out is None or not is_run_dir(student):
        return None
    run, out = Path(student).resolve(), Path(out).resolve()
    if out.parent != run or not out.name.startswith("eval") or not (run / "metrics.json").is_file():
        return None
    return refresh_card(run)
