"""The distillation loop: recipe → trained student on disk.

One code path for CPU, one GPU and many GPUs (accelerate; `accelerate launch -m optical
distill ...`). :class:`Distiller` follows a recipe in named steps, each readable alone:

    setup_run_dir → setup_data → setup_models → setup_teacher_states → setup_warm_start
    → setup_objective → setup_optimizer → train (train_step × N) → save

Per optimizer step: teacher states for the English side (from the on-disk cache), student
states for the other side, the recipe's weighted losses, AdamW with warmup and linear
decay, gradient clipping; bf16 autocast on CUDA only. Every `eval_every` steps a held-out
slice of the bitext is scored and logged to `log.jsonl`; every `checkpoint_every` steps (and
at the last step) an atomic checkpoint is written; a NaN/inf loss, or weights that became
NaN/inf, stop the run with the last good checkpoint intact: no checkpoint and no student is
ever written with non-finite weights. A run folder holds one run (optical.run_dir).

    >>> from optical import load_recipe                                  # doctest: +SKIP
    >>> recipe = load_recipe("vi/quickstart", ["train.steps=10"])        # doctest: +SKIP
    >>> Distiller(recipe).run().student_dir                              # doctest: +SKIP
    PosixPath('runs/vi-quickstart/student')
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from optical.data.bitext import read_bitext, split_heldout
from optical.errors import OpticalError, writing
from optical.eval.heldout import heldout_metrics
from optical.files import atomic_write_text, default_cache_dir
from optical.losses import DistillBatch, build_objective
from optical.models.sources import folder_identity, resolve_model
from optical.models.student import Student
from optical.models.teacher import Teacher, TeacherOutput, load_teacher
from optical.models.vocabulary import AUTO_UNKNOWN_SHARE, added_tokens_identity, extend_vocabulary, token_counts
from optical.ot.masks import ot_mask
from optical.ot.masses import document_frequencies, idf_masses, idf_table
from optical.recipe import Recipe
from optical.run_dir import append_log, check_run_dir, check_writable, clear_run_dir, truncate_log
from optical.training.checkpoint import (
    first_non_finite,
    latest_checkpoint,
    load_trainer_state,
    remove_leftovers,
    restore_optimizer,
    restore_rng_state,
    save_checkpoint,
    save_student,
)
from optical.training.teacher_store import TeacherStore
from optical.training.trackers import (
    accelerator_options,
    check_trackers,
    finish_trackers,
    start_trackers,
    tracker_values,
)
from optical.training.warm_start import warm_start, warm_start_cache, warm_start_sample


@dataclass
class DistillResult:
    run_dir: Path
    student_dir: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    heldout: dict = field(default_factory=dict)
    warm_start: dict | None = None
    already_finished: bool = False  # `resume` found the run finished and did nothing


def distill(recipe: Recipe, resume: bool = False, show_progress: bool = True,
            cache_dir: Path | None = None, overwrite: bool = False, resume_changed: bool = False) -> DistillResult:
    """Run the recipe; write `<output_dir>/student/`, `recipe.yaml`, `metrics.json`, `log.jsonl`.

    `resume` continues from the last checkpoint; `overwrite` replaces a run already in the
    folder (its own files only, see optical.run_dir.clear_run_dir); `resume_changed` lets
    `resume` continue under a changed recipe, reporting each change."""
    return Distiller(recipe, resume, show_progress, cache_dir, overwrite, resume_changed).run()


# ----------------------------------------------------------------------------- helpers


def choose_device(name: str) -> torch.device:
    """`train.device`: auto = CUDA when present, else Apple's MPS, else the CPU; a device asked
    for by name must exist (one line otherwise)."""
    mps = getattr(torch.backends, "mps", None)
    available = {"cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available()), "cpu": True}
    if name == "auto":
        return torch.device(next(kind for kind in ("cuda", "mps", "cpu") if available[kind]))
    if not available[name]:
        raise OpticalError(f"train.device {name}: not available on this machine (available: "
                           f"{', '.join(k for k, v in available.items() if v)})")
    return torch.device(name)


def choose_precision(precision: str, device: torch.device) -> str:
    """accelerate's mixed_precision: bf16/fp16 only on CUDA; CPU always runs fp32."""
    if device.type != "cuda":
        return "no"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


#: above this share of unknown tokens on the target side, distill warns (e5-small: ≤ 0.001 on vi, hi, eu, om; 0.46 on dz)
UNKNOWN_TOKEN_WARNING = AUTO_UNKNOWN_SHARE


def count_truncated(tokenizer, texts: list[str], max_length: int, prefix: str = "") -> int:
    """How many texts have more tokens (specials included) than `max_length` and get cut."""
    return token_counts(tokenizer, texts, max_length, prefix)[0]


def check_finite(model: torch.nn.Module, step: int, last_checkpoint) -> None:
    """Stop before writing weights that hold NaN/inf (a loss can stay finite one step longer)."""
    name = first_non_finite(model)
    if name is not None:
        raise OpticalError(f"weights became non-finite ({name}) after step {step}; stopped. Last good "
                           f"checkpoint: {last_checkpoint or 'none written yet'}. Try a lower train.lr")


def finished_result(run_dir: Path) -> DistillResult:
    """What `resume` reports for a run that already finished (read back from its metrics.json)."""
    try:
        summary = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise OpticalError(f"{run_dir / 'metrics.json'}: cannot read ({err})") from None
    summary = summary if isinstance(summary, dict) else {}
    heldout = summary.get("heldout") if isinstance(summary.get("heldout"), dict) else {}
    return DistillResult(run_dir, run_dir / "student", int(summary.get("steps") or 0), [], heldout,
                         summary.get("warm_start"), already_finished=True)


# ----------------------------------------------------------------------------- the loop


class Distiller:
    """One distillation run, step by step (torchtune's recipe shape).

    `run()` calls the steps in order; a benchmark or a test can call them one by one and
    then time or inspect `forward`, `train_step` or `optimizer_step` on the real objects.
    Attributes appear as the steps run: `train_pairs`/`heldout` (setup_data), `teacher`,
    `student` (setup_models), `store` (setup_teacher_states), `objective`
    (setup_objective), `model`, `optimizer`, `scheduler`, `total_steps` (setup_optimizer).
    """

    def __init__(self, recipe: Recipe, resume: bool = False, show_progress: bool = True,
                 cache_dir: Path | None = None, overwrite: bool = False, resume_changed: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.recipe, self.cfg = recipe, recipe.train
        self.resume, self.overwrite, self.resume_changed = resume, overwrite, resume_changed
        target = choose_device(self.cfg.device)
        self.run_dir = Path(recipe.output_dir)
        check_trackers(self.cfg.trackers)  # a tracker that is not installed: one line, before anything loads
        self.accelerator = Accelerator(mixed_precision=choose_precision(self.cfg.precision, target),
                                       cpu=target.type == "cpu", **accelerator_options(self.cfg.trackers, self.run_dir))
        self.device, self.main = self.accelerator.device, self.accelerator.is_main_process
        set_seed(self.cfg.seed)
        self.log_path = self.run_dir / "log.jsonl"
        self.cache_dir = cache_dir or default_cache_dir()
        self.progress = show_progress and self.main
        self.checkpoint: Path | None = None  # the checkpoint this run resumes from
        self.warm_report: dict | None = None
        self.refit_report: dict | None = None
        self.vocabulary: dict | None = None  # what extend_vocabulary added (setup_models, or the log on resume)
        self.start_step = 0
        self._order: tuple[int | None, list[int]] = (None, [])  # (epoch, its data order)
        self.earlier_losses: list[float] = []  # step losses of the processes a resumed run continues

    def say(self, text: str) -> None:
        """Progress news: shown unless --quiet, on the main process only."""
        if self.progress:
            tqdm.write(text)

    def notice(self, text: str) -> None:
        """What --resume-changed, --overwrite and data warnings did: shown even with --quiet."""
        if self.main:
            tqdm.write(text)

    # ------------------------------------------------------------------ set-up

    def run(self) -> DistillResult:
        """Every step in order; the run's result."""
        new_folder = not self.run_dir.exists()
        if self.setup_run_dir():
            self.say(f"{self.run_dir}: the run has already finished; nothing to do")
            return finished_result(self.run_dir)
        try:
            self.setup_data()
            self.setup_models()
            self.setup_teacher_states()
            self.setup_warm_start()
            self.setup_objective()
            self.setup_optimizer()
        except BaseException:
            # Bad data or a model that does not load: do not leave behind the empty folder
            # that the write check made (a folder that holds anything is kept, for --resume).
            if new_folder and self.main and self.run_dir.is_dir() and not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()
            raise
        try:
            self.start_log()
            losses = self.train()
            self.refit_head()
            return self.save(losses)
        finally:
            finish_trackers(self.accelerator)

    def setup_run_dir(self) -> bool:
        """Check the folder before any model loads (one run per folder, writable); clear it
        for --overwrite; drop what killed writes left. True when resume finds it finished."""
        if check_run_dir(self.run_dir, self.recipe, self.resume, self.overwrite, self.resume_changed,
                         say=self.notice):
            return True
        if self.main:
            check_writable(self.run_dir)  # a read-only --out fails now, not after minutes of model loading
            if self.overwrite:
                for path in clear_run_dir(self.run_dir):
                    self.notice(f"--overwrite: removed {path}")
        if self.main and self.run_dir.is_dir():
            with writing(self.run_dir):
                remove_leftovers(self.run_dir)  # temporary files of writes a kill interrupted
        return False

    def setup_data(self) -> None:
        """Read the bitext and hold out the progress-check pairs."""
        b = self.recipe.bitext
        self.bitext = read_bitext(b.path, b.format, self.recipe.lang, b.en_column, b.other_column, b.on_bad_line,
                                  b.hf_name, b.hf_config, b.hf_split, b.max_pairs,
                                  max_bad_fraction=b.max_bad_fraction)
        self.say(self.bitext.summary())
        if not self.progress:  # a warning about the data is shown even with --quiet
            for note in self.bitext.notes:
                if note.startswith("warning"):
                    self.notice(f"{self.bitext.source}: {note}")
        self.train_pairs, self.heldout = split_heldout(self.bitext.pairs, b.heldout, self.cfg.seed)
        if not self.train_pairs:
            raise OpticalError(f"{self.bitext.source}: no training pairs left after holding out {len(self.heldout)}")

    def setup_models(self) -> None:
        """The frozen teacher; the student, fresh or from the checkpoint `resume` continues."""
        recipe, device = self.recipe, self.device
        self.teacher: Teacher = load_teacher(recipe.teacher.kind, recipe.teacher.model, recipe.teacher.max_length,
                                             recipe.teacher.layer, device=device)
        self.checkpoint = latest_checkpoint(self.run_dir) if self.resume else None
        if self.resume and self.checkpoint is None:
            self.say(f"no checkpoint in {self.run_dir}; starting from scratch")
        if self.checkpoint is not None:
            student = Student.load(self.checkpoint / "student")
            bad = first_non_finite(student)
            if bad is not None:
                raise OpticalError(f"{self.checkpoint}: the checkpoint holds non-finite weights "
                                   f"({bad}); remove it or choose a new --out")
            self.say(f"resuming from {self.checkpoint}")
            target_counts = self.target_token_counts(student)
        else:
            student = Student.create(recipe.student.model, self.teacher.dim, recipe.student.max_length,
                                     recipe.student.prefix, self.cache_dir, normalize=recipe.student.normalize,
                                     layers=recipe.student.layers)
            target_counts = self.target_token_counts(student)
            self.vocabulary = extend_vocabulary(student, self.train_pairs, recipe.student.new_tokens,
                                                unknown_share=target_counts[1])
            if self.vocabulary is not None:
                target_counts = self.target_token_counts(student)  # the new tokens change both numbers
                v = self.vocabulary
                self.say(f"vocabulary: {v.added} new tokens for {recipe.lang} units the tokenizer read as "
                         f"{student.tokenizer.unk_token}; unknown tokens {100 * v.unknown_before:.1f} % → "
                         f"{100 * v.unknown_after:.1f} %")
                self.vocabulary = v.as_dict()
        student.to(device)
        # Mean pooling never reads the encoder's own pooler (BERT, XLM-R): freeze it, or DDP on
        # several processes stops because those parameters never receive a gradient.
        pooler = getattr(student.transformer.auto_model, "pooler", None)
        if isinstance(pooler, torch.nn.Module):
            pooler.requires_grad_(False)
        if recipe.student.dropout is not None:  # on a resumed student too: the folder keeps the model's own
            student.set_dropout(recipe.student.dropout)
        if recipe.student.freeze_embeddings:
            frozen = student.freeze_word_embeddings()
            self.say(f"word embeddings frozen ({frozen / 1e6:.1f}M parameters)")
        self.student = student
        teacher, pairs = self.teacher, self.train_pairs
        student_cut, self.unknown_share = target_counts
        self.truncated = {
            "teacher_en": count_truncated(teacher.tokenizer, [p[0] for p in pairs], teacher.max_length),
            "student_other": student_cut,
        }
        if self.unknown_share > UNKNOWN_TOKEN_WARNING:
            # Distillation cannot teach the student to read what its tokenizer turns into one symbol.
            self.notice(f"warning: {100 * self.unknown_share:.1f} % of the student's {recipe.lang} tokens are its "
                        f"unknown token {student.tokenizer.unk_token}: its vocabulary does not cover this "
                        f"language's script; student.new_tokens (auto or a number) adds tokens for it "
                        f"(docs/distillation.md)")
        if any(self.truncated.values()):
            self.say(f"truncated to max_length: {self.truncated['teacher_en']} English sentences (teacher, "
                     f"{teacher.max_length} tokens), {self.truncated['student_other']} {recipe.lang} sentences "
                     f"(student, {student.max_length} tokens) of {len(pairs)}")

    def target_token_counts(self, student) -> tuple[int, float]:
        """(training sentences the student cuts at max_length, share of unknown tokens) of the
        target side: one tokenisation pass, shared by the vocabulary extension and the report."""
        return token_counts(student.tokenizer, [p[1] for p in self.train_pairs], student.max_length, student.prefix)

    def setup_teacher_states(self) -> None:
        """Teacher states of every English sentence, computed once and cached on disk; the
        main process builds the cache, the others read it."""
        english = [p[0] for p in self.train_pairs] + [p[0] for p in self.heldout]
        store_dir = self.cache_dir if self.cfg.teacher_cache else None
        if self.main:
            self.store, was_cached = TeacherStore.cached(self.teacher, english, store_dir, show_progress=self.progress)
            self.say("teacher states: " + ("read from cache" if was_cached else f"computed for {len(english)} sentences"))
        self.accelerator.wait_for_everyone()
        if not self.main:
            self.store, _ = TeacherStore.cached(self.teacher, english, store_dir, show_progress=False)
        self.heldout_teacher = self.store.sentence[len(self.train_pairs):]

    def setup_warm_start(self) -> None:
        """Fit the head in closed form before step 1 (not when resuming: the checkpoint has it)."""
        ws = self.recipe.warm_start
        if self.checkpoint is not None or ws.method == "none":
            return
        self.warm_report = self.fit_head(self.student, self.head_cache(self.student))
        self.say(f"warm start ({ws.method}, {self.warm_report['pairs']} pairs): held-out cosine to teacher "
                 f"{self.warm_report['heldout_cosine_before']:.3f} → {self.warm_report['heldout_cosine_after']:.3f}")

    def warm_start_pairs(self) -> tuple[list[tuple[str, str]], list[int]]:
        """The pairs the closed-form head fits use (a seeded sample) and their indices."""
        chosen = warm_start_sample(len(self.train_pairs), self.recipe.warm_start.pairs, self.cfg.seed)
        return [self.train_pairs[i] for i in chosen], chosen

    def head_cache(self, student: Student) -> Path:
        """Where the untrained student's pooled states of the warm start's pairs are cached
        (one file per base model, length, prefix, pairs and layers read)."""
        recipe = self.recipe
        resolved = resolve_model(recipe.student.model, self.cache_dir)
        return warm_start_cache(self.cache_dir, recipe.student.model,
                                folder_identity(resolved) if Path(resolved).exists() else "",
                                recipe.student.max_length, recipe.student.prefix, self.warm_start_pairs()[0],
                                layers=student.layers,
                                vocabulary=added_tokens_identity(student, self.vocabulary["added"]) if self.vocabulary else "")

    def fit_head(self, student: Student, cache: Path | None = None) -> dict:
        """The recipe's closed-form head fit on the warm start's pairs; its report."""
        ws = self.recipe.warm_start
        fit_pairs, chosen = self.warm_start_pairs()
        return warm_start(student, fit_pairs, self.store.sentence[chosen], ws.method, ws.ridge, ws.batch_size,
                          stack_english=ws.english, show_progress=self.progress, cache_path=cache).as_dict()

    def refit_head(self) -> None:
        """`warm_start.refit`: after the last step, fit the head again in closed form on the
        warm start's pairs, through the trained encoder (eval mode, so no dropout). Every
        process fits the same head from the same weights, so the final model stays identical
        on all of them; a resumed run redoes it from the last checkpoint."""
        ws = self.recipe.warm_start
        if not ws.refit or ws.method == "none":
            return
        student = self.final_model()
        switched = ws.refit_layers is not None and student.use_layers(ws.refit_layers, "warm_start.refit_layers")
        if self.total_steps == 0 and not switched:
            return  # the same fit on the same untouched encoder: the warm start already is it
        student.eval()
        # untrained (0 steps, other layers): the encoder is the base model, whose states are cached
        self.refit_report = self.fit_head(student, self.head_cache(student) if self.total_steps == 0 else None)
        self.refit_report["layers"] = student.layers  # None: the last layer alone
        if switched:  # the new head started at zero: no "before" worth reporting
            self.refit_report["heldout_cosine_before"] = None
            self.say(f"head refit ({ws.method}, {self.refit_report['pairs']} pairs) on layers "
                     f"{student.layers or 'last'} of the trained encoder: held-out cosine "
                     f"{self.refit_report['heldout_cosine_after']:.3f}")
            return
        self.say(f"head refit ({ws.method}, {self.refit_report['pairs']} pairs) on the trained encoder: held-out cosine "
                 f"{self.refit_report['heldout_cosine_before']:.3f} → {self.refit_report['heldout_cosine_after']:.3f}")

    def setup_objective(self) -> None:
        """The weighted losses, the special tokens kept out of OT, and IDF token masses."""
        recipe, teacher, student = self.recipe, self.teacher, self.student
        self.objective = build_objective(recipe.loss, recipe.ot)
        if recipe.ot.solver == "triton" and any(t.name == "token_ot" for t in recipe.loss):
            from optical.ot.sinkhorn_triton import triton_available

            if self.device.type != "cuda" or not triton_available():
                why = "no CUDA device" if self.device.type != "cuda" else "triton is not installed"
                self.notice(f"ot.solver: triton needs CUDA and triton ({why}); token_ot uses the torch solver")
        self.teacher_special = set(teacher.tokenizer.all_special_ids)
        self.student_special = set(student.tokenizer.all_special_ids)
        self.prefix_length = student.prefix_length()
        self.teacher_idf = self.student_idf = self.student_idf_en = None
        if recipe.ot.masses == "idf":
            store, n = self.store, len(self.train_pairs)
            df, n_sent = document_frequencies(
                store.input_ids[store.offsets[i]:store.offsets[i + 1]].tolist() for i in range(n))
            self.teacher_idf = idf_table(df, n_sent, len(teacher.tokenizer))

            def student_idf(texts: list[str]):
                df, n_sent = document_frequencies(student.tokenizer(texts, verbose=False)["input_ids"])
                return idf_table(df, n_sent, len(student.tokenizer))

            self.student_idf = student_idf([p[1] for p in self.train_pairs])
            if self.objective.needs_english_tokens:  # the English side's own frequencies, through the student's tokenizer
                self.student_idf_en = student_idf([p[0] for p in self.train_pairs])

    def setup_optimizer(self) -> None:
        """AdamW (the head without weight decay, at its own rate), warmup + linear decay, and
        their state from the checkpoint when resuming; then accelerate wraps the model."""
        from transformers import get_linear_schedule_with_warmup

        cfg, student = self.cfg, self.student
        self.world = self.accelerator.num_processes
        self.pairs_per_step = cfg.batch_size * cfg.grad_accum * self.world
        self.total_steps = (cfg.steps if cfg.steps is not None
                            else max(1, math.ceil(cfg.epochs * len(self.train_pairs) / self.pairs_per_step)))
        head_params = list(student.head.parameters())
        head_ids = {id(p) for p in head_params}
        body_params = [p for p in student.parameters() if id(p) not in head_ids and p.requires_grad]
        optimizer = torch.optim.AdamW([
            {"params": body_params, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"params": head_params, "lr": cfg.head_lr or cfg.lr, "weight_decay": 0.0},
        ])
        self.scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * self.total_steps),
                                                         max(1, self.total_steps))
        if self.checkpoint is not None:
            state, tensors = load_trainer_state(self.checkpoint)
            restore_optimizer(optimizer, tensors, state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            restore_rng_state(state)
            self.start_step = state["step"]
        self.model, self.optimizer = self.accelerator.prepare(student, optimizer)

    def start_log(self) -> None:
        """recipe.yaml into the run folder; on resume, drop the log lines that will be redone;
        start the recipe's trackers (`train.trackers`)."""
        if not self.main:
            return
        with writing(self.run_dir):
            self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "recipe.yaml", self.recipe.to_yaml())
        # the warm start and the vocabulary extension ran in this process (not resumed from a checkpoint)
        set_up = {key: value for key, value in (("warm_start", self.warm_report), ("vocabulary", self.vocabulary))
                  if value is not None}
        logged = False
        if self.resume:
            truncate_log(self.log_path, self.start_step)  # the steps after the checkpoint run again
            logged = self.recover_log()
        # Kept in the log, so a later resume reports it too; also when --resume found no
        # checkpoint and started over (a process killed before its first checkpoint).
        if set_up and not logged:
            append_log(self.log_path, {"step": 0, **set_up})
        if self.cfg.trackers:
            start_trackers(self.accelerator, self.recipe, self.run_dir, self.start_step if self.resume else None)

    def recover_log(self) -> bool:
        """What the killed process(es) logged up to the checkpoint: their step losses and the
        warm-start and vocabulary reports, so metrics.json ends as an unbroken run's. True when
        the log holds the set-up record (step 0) with either report."""
        self.earlier_losses = []
        found = False
        if not self.log_path.is_file():
            return found
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if isinstance(record.get("warm_start"), dict):
                found = True
                if self.warm_report is None:
                    self.warm_report = record["warm_start"]
            if isinstance(record.get("vocabulary"), dict):
                found = True
                if self.vocabulary is None:
                    self.vocabulary = record["vocabulary"]
            if "loss" in record and isinstance(record.get("step"), int) and record["step"] <= self.start_step:
                self.earlier_losses.append(float(record["loss"]))
        return found

    def log_record(self, record: dict) -> None:
        """One record onto log.jsonl and, as numbers at its step, to the trackers (main process)."""
        append_log(self.log_path, record)
        if self.cfg.trackers:
            self.accelerator.log(tracker_values(record), step=record["step"])

    # ------------------------------------------------------------------ one step

    def epoch_order(self, epoch: int) -> list[int]:
        """The seeded data order of one epoch (built once per epoch, not per micro-batch)."""
        if self._order[0] != epoch:
            n = len(self.train_pairs)
            self._order = (epoch, torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed + epoch)).tolist())
        return self._order[1]

    def micro_batch_indices(self, k: int) -> list[int]:
        """Training-pair indices of micro-batch `k` (counted over the whole run) on this process."""
        micro = self.cfg.batch_size
        batches_per_epoch = max(1, len(self.train_pairs) // (micro * self.world))
        epoch, position = divmod(k, batches_per_epoch)
        order = self.epoch_order(epoch)
        start = (position * self.world + self.accelerator.process_index) * micro
        chunk = order[start:start + micro]
        return chunk if chunk else order[:micro]

    def teacher_states(self, indices: list[int]) -> TeacherOutput:
        """The cached teacher outputs of training pairs `indices`, padded: tokens [B, n, D]."""
        return self.store.batch(indices, self.device)

    def forward(self, indices: list[int], teacher: TeacherOutput | None = None) -> DistillBatch:
        """Everything the losses read for pairs `indices`: teacher states (`teacher`, else from
        the store), the student's token and sentence states of the other side (and of the
        English side when a loss asks), OT masks and token masses."""
        t = teacher if teacher is not None else self.teacher_states(indices)
        drop = self.recipe.ot.drop_special_tokens
        t_mask = ot_mask(t.input_ids, t.attention_mask, self.teacher_special, drop)
        features = {k: v.to(self.device)
                    for k, v in self.student.tokenize([self.train_pairs[i][1] for i in indices]).items()}
        s_tokens, s_sentence = self.model(features)
        s_mask = ot_mask(features["input_ids"], features["attention_mask"], self.student_special, drop,
                         self.prefix_length)
        s_sentence_en = s_tokens_en = s_mask_en = s_masses_en = None
        if self.objective.needs_english_student:
            en_features = {k: v.to(self.device)
                           for k, v in self.student.tokenize([self.train_pairs[i][0] for i in indices]).items()}
            en_tokens, s_sentence_en = self.model(en_features)
            if self.objective.needs_english_tokens:  # token_ot's `english`: the English side transported too
                s_tokens_en = en_tokens
                s_mask_en = ot_mask(en_features["input_ids"], en_features["attention_mask"], self.student_special,
                                    drop, self.prefix_length)
                if self.student_idf_en is not None:
                    s_masses_en = idf_masses(en_features["input_ids"], s_mask_en, self.student_idf_en)
        return DistillBatch(
            teacher_tokens=t.token_states, teacher_mask=t_mask, teacher_sentence=t.sentence,
            student_tokens=s_tokens, student_mask=s_mask, student_sentence=s_sentence,
            student_sentence_en=s_sentence_en, student_tokens_en=s_tokens_en, student_mask_en=s_mask_en,
            student_masses_en=s_masses_en,
            teacher_masses=idf_masses(t.input_ids, t_mask, self.teacher_idf) if self.teacher_idf is not None else None,
            student_masses=(idf_masses(features["input_ids"], s_mask, self.student_idf)
                            if self.student_idf is not None else None),
        )

    def train_step(self, step: int, last_checkpoint=None) -> tuple[float, dict[str, float]]:
        """Optimizer step `step` (1-based): `grad_accum` micro-batches forward and backward,
        then clip and update. Returns the step's loss and its parts (averaged over micro-batches)."""
        cfg, accelerator = self.cfg, self.accelerator
        # Saving a checkpoint or scoring the held-out pairs leaves the encoder in eval mode
        # (sentence-transformers' save/encode call .eval()): dropout must be back on.
        self.model.train()
        step_loss, parts_sum = 0.0, {}
        for accum in range(cfg.grad_accum):
            k = (step - 1) * cfg.grad_accum + accum
            with accelerator.autocast():
                loss, parts = self.objective(self.forward(self.micro_batch_indices(k)))
            if not torch.isfinite(loss):
                where_ok = last_checkpoint or "none written yet"
                raise OpticalError(f"loss became {float(loss.detach())} at step {step} ({parts}); stopped. "
                                   f"Last good checkpoint: {where_ok}. Try a lower train.lr or a larger ot.epsilon")
            if accum < cfg.grad_accum - 1:
                with accelerator.no_sync(self.model):
                    accelerator.backward(loss / cfg.grad_accum)
            else:
                accelerator.backward(loss / cfg.grad_accum)
            step_loss += float(loss.detach()) / cfg.grad_accum
            for name, value in parts.items():
                parts_sum[name] = parts_sum.get(name, 0.0) + value / cfg.grad_accum
        self.optimizer_step()
        return step_loss, parts_sum

    def optimizer_step(self) -> None:
        """Clip the gradient norm, update, advance the schedule, clear the gradients."""
        if self.cfg.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ train and save

    def train(self) -> list[float]:
        """Steps start_step+1 … total_steps with logging, held-out checks and checkpoints."""
        cfg, accelerator, main = self.cfg, self.accelerator, self.main
        losses: list[float] = []
        self.last_checkpoint = self.checkpoint
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.start_step, disable=not self.progress, desc="distill",
                   unit="step")
        self.started = time.perf_counter()
        for step in range(self.start_step + 1, self.total_steps + 1):
            step_loss, parts = self.train_step(step, self.last_checkpoint)
            losses.append(step_loss)
            rate = (step - self.start_step) * self.pairs_per_step / max(time.perf_counter() - self.started, 1e-9)
            bar.set_postfix(loss=f"{step_loss:.4f}", pairs_s=f"{rate:.1f}")
            bar.update(1)
            if main:
                self.log_record({"step": step, "loss": step_loss, **parts,
                                 "lr": self.scheduler.get_last_lr()[0], "pairs_per_s": rate})
            if cfg.eval_every and step % cfg.eval_every == 0 and main and self.heldout:
                metrics = heldout_metrics(accelerator.unwrap_model(self.model), self.heldout, self.heldout_teacher)
                self.log_record({"step": step, "heldout": metrics})
                self.say(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
            if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == self.total_steps):
                # every rank checks (the weights are the same on all), so all stop together
                check_finite(accelerator.unwrap_model(self.model), step, self.last_checkpoint)
                accelerator.wait_for_everyone()
                if main:
                    self.last_checkpoint = save_checkpoint(self.run_dir, step, accelerator.unwrap_model(self.model),
                                                           self.optimizer, self.scheduler, {"loss": step_loss})
        bar.close()
        return losses

    def final_model(self) -> Student:
        """The trained student, unwrapped from accelerate (identical on every process)."""
        return self.accelerator.unwrap_model(self.model)

    def write_card(self, final: Student, student_dir: Path, summary: dict) -> None:
        """The student's model card (README.md): sentence-transformers' card with the teacher,
        languages, licence, bitext, recipe and held-out checks (optical.publish.card). A card that
        cannot be generated leaves sentence-transformers' own and a warning, not a lost run."""
        from optical.publish.card import write_card

        try:
            write_card(final.model, self.recipe, self.run_dir, student_dir, summary=summary)
        except OpticalError:
            raise
        except Exception as err:  # the card documents the run; the run itself is complete
            self.notice(f"warning: model card not written ({type(err).__name__}: {err}); "
                        f"`optical card {self.run_dir}` tries again")

    def save(self, losses: list[float]) -> DistillResult:
        """The student folder, the final held-out check, the student's model card, and
        metrics.json (written last: its presence marks the run finished, so `resume` then
        does nothing)."""
        losses = self.earlier_losses + losses  # a resumed run reports the whole run
        self.accelerator.wait_for_everyone()
        final = self.final_model()
        check_finite(final, self.total_steps, self.last_checkpoint)
        student_dir = self.run_dir / "student"
        metrics = {}
        if self.main:
            save_student(final, student_dir)
            metrics = heldout_metrics(final, self.heldout, self.heldout_teacher)
            summary = {"steps": self.total_steps, "pairs": len(self.bitext.pairs), "train_pairs": len(self.train_pairs),
                       "heldout_pairs": len(self.heldout), "skipped_lines": len(self.bitext.bad),
                       "truncated": self.truncated, "student_unknown_tokens": round(self.unknown_share, 4),
                       "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
                       **({"vocabulary": self.vocabulary} if self.vocabulary else {}),
                       "warm_start": self.warm_report, **({"refit": self.refit_report} if self.refit_report else {}),
                       "heldout": metrics,
                       "seconds": round(time.perf_counter() - self.started, 2)}
            self.write_card(final, student_dir, summary)
            self.log_record({"step": self.total_steps, "heldout": metrics, "final": True})
            atomic_write_text(self.run_dir / "metrics.json", json.dumps(summary, indent=2))
            self.say(f"student saved to {student_dir}")
        return DistillResult(self.run_dir, student_dir, self.total_steps, losses, metrics, self.warm_report)
