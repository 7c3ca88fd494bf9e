"""The distillation loop: recipe → trained student on disk.

One code path for CPU, one GPU and many GPUs (accelerate; `accelerate launch -m optical
distill ...`). Per optimizer step: teacher states for the English side (from the on-disk
cache), student states for the other side, the recipe's weighted losses, AdamW with warmup
and linear decay, gradient clipping; bf16 autocast on CUDA only. Every `eval_every` steps a
held-out slice of the bitext is scored and logged to `log.jsonl`; every `checkpoint_every`
steps (and at the last step) an atomic checkpoint is written; a NaN/inf loss, or weights
that became NaN/inf, stop the run with the last good checkpoint intact: no checkpoint and
no student is ever written with non-finite weights. A run folder holds one run: running
into it again needs `resume`, which refuses a changed recipe and does nothing when the run
has finished.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from optical.training.checkpoint import (atomic_write_text, first_non_finite, latest_checkpoint, load_trainer_state,
                                remove_leftovers, restore_optimizer, restore_rng_state, save_checkpoint,
                                save_student)
from optical.data.bitext import read_bitext, split_heldout
from optical.errors import OpticalError, writing
from optical.losses import DistillBatch, build_objective
from optical.models.sources import default_cache_dir, folder_identity, resolve_model
from optical.models.student import Student
from optical.models.teacher import Teacher, load_teacher
from optical.ot.masses import document_frequencies, idf_masses, idf_table
from optical.recipe import Recipe, load_recipe, recipe_differences
from optical.training.teacher_store import TeacherStore
from optical.training.warm_start import warm_start


@dataclass
class DistillResult:
    run_dir: Path
    student_dir: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    heldout: dict = field(default_factory=dict)
    warm_start: dict | None = None
    already_finished: bool = False  # `resume` found the run finished and did nothing


# ----------------------------------------------------------------------------- helpers


def special_token_mask(input_ids: torch.Tensor, special_ids: set[int]) -> torch.Tensor:
    """True where input_ids [B, n] holds a special token ([CLS], [SEP], <s>, </s>, pad)."""
    if not special_ids:
        return torch.zeros_like(input_ids, dtype=torch.bool)
    ids = torch.tensor(sorted(special_ids), device=input_ids.device)
    return torch.isin(input_ids, ids)


def ot_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: set[int], drop_special: bool,
            prefix_length: int = 0) -> torch.Tensor:
    """Tokens that take part in OT: real, not special (optionally), not the prompt prefix.
    Falls back to all real tokens for a row that would otherwise be empty."""
    mask = attention_mask.bool()
    if drop_special:
        mask = mask & ~special_token_mask(input_ids, special_ids)
    if prefix_length:
        mask[:, 1:1 + prefix_length] = False
    empty = ~mask.any(1)
    if empty.any():
        mask[empty] = attention_mask.bool()[empty]
    return mask


def choose_precision(precision: str, device: torch.device) -> str:
    """accelerate's mixed_precision: bf16/fp16 only on CUDA; CPU always runs fp32."""
    if device.type != "cuda":
        return "no"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


@torch.no_grad()
def heldout_metrics(student: Student, pairs: list[tuple[str, str]], teacher_sentences: torch.Tensor,
                    batch_size: int = 64) -> dict[str, float]:
    """Translation retrieval accuracy@1 both ways, the OPTICAL setting (teacher English query →
    student document), and sentence MSE to the teacher, on held-out pairs."""
    if not pairs:
        return {}
    was_training = student.training
    student.eval()
    device = student.head.weight.device
    other_raw, english_raw = [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        for texts, out in (([p[1] for p in chunk], other_raw), ([p[0] for p in chunk], english_raw)):
            features = {k: v.to(device) for k, v in student.tokenize(texts).items()}
            out.append(student(features)[1].float().cpu())
    student.train(was_training)
    other, english = torch.cat(other_raw), torch.cat(english_raw)
    teacher = teacher_sentences.float().cpu()
    target = torch.arange(len(pairs))

    def accuracy(queries, docs):
        scores = F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T
        return float((scores.argmax(1) == target).float().mean())

    return {
        "acc_other_to_en": accuracy(other, english),
        "acc_en_to_other": accuracy(english, other),
        "acc_teacher_en_to_other": accuracy(teacher, other),
        "mse_to_teacher": float(F.mse_loss(other, teacher)),
        "cosine_to_teacher": float(F.cosine_similarity(other, teacher, dim=-1).mean()),
    }


def write_rank_hash(model: torch.nn.Module, rank: int) -> None:
    """With $OPTICAL_RANK_HASH_DIR set (multi-process tests), write the sha256 of this rank's
    final weights to `weights_rank<rank>.sha256`: all ranks must end with identical weights."""
    folder = os.environ.get("OPTICAL_RANK_HASH_DIR")
    if not folder:
        return
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(folder) / f"weights_rank{rank}.sha256", digest.hexdigest() + "\n")


def count_truncated(tokenizer, texts: list[str], max_length: int, prefix: str = "", batch: int = 4096) -> int:
    """How many texts have more tokens (specials included) than `max_length` and get cut."""
    over = 0
    for start in range(0, len(texts), batch):
        ids = tokenizer([prefix + t for t in texts[start:start + batch]], truncation=False, verbose=False)["input_ids"]
        over += sum(len(x) > max_length for x in ids)
    return over


def warm_start_cache(cache_dir: Path, recipe: Recipe, pairs: list[tuple[str, str]]) -> Path:
    """Cache file for the untrained student's pooled states on these pairs."""
    resolved = resolve_model(recipe.student.model, cache_dir)
    digest = hashlib.sha256(f"{recipe.student.model}|{folder_identity(resolved) if Path(resolved).exists() else ''}|"
                            f"{recipe.student.max_length}|{recipe.student.prefix}".encode())
    for en, other in pairs:
        digest.update(f"{en}\t{other}\n".encode("utf-8"))
    return cache_dir / "warm_start" / f"{digest.hexdigest()[:24]}.safetensors"


def warm_start_sample(n_train: int, pairs: int | None, seed: int) -> list[int]:
    """Indices of the training pairs the warm start fits on: a seeded sample of `pairs`
    (every pair when None or more than there are), in file order."""
    if pairs is None or pairs >= n_train:
        return list(range(n_train))
    return sorted(random.Random(seed).sample(range(n_train), pairs))


def _log(path: Path, record: dict) -> None:
    with writing(path), path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


#: what a run writes into its folder; any of them there means the folder holds a run
RUN_FILES = ("recipe.yaml", "log.jsonl", "metrics.json", "student", "checkpoints")


def check_run_dir(run_dir: Path, recipe: Recipe, resume: bool, overwrite: bool = False,
                  resume_changed: bool = False, say=print) -> bool:
    """Keep one run per folder. Without `resume` the folder must not hold a run (absent or
    empty is fine) unless `overwrite`; with it, the run's saved recipe must match `recipe` but
    for progress-only keys, unless `resume_changed` (then each change is reported through
    `say`). Returns True when `resume` finds the run already finished."""
    if run_dir.exists() and not run_dir.is_dir():
        raise OpticalError(f"output_dir {run_dir}: is a file, not a folder; choose another --out")
    if overwrite and resume:
        raise OpticalError("--overwrite and --resume exclude each other: overwrite starts the run afresh")
    if resume_changed and not resume:
        raise OpticalError("--resume-changed needs --resume")
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not resume:
        if found and not overwrite:
            raise OpticalError(f"{run_dir}: already holds a run ({found[0]}); continue it with --resume, "
                               f"replace it with --overwrite, or choose a new --out")
        return False
    saved = run_dir / "recipe.yaml"
    if saved.is_file():
        changes = recipe_differences(load_recipe(saved), recipe)
        if changes and not resume_changed:
            key, old, new = changes[0]
            raise OpticalError(f"--resume: {key} is {new!r} but the run in {run_dir} used {old!r} ({saved}); "
                               f"resume with the same recipe, allow it with --resume-changed, or choose a new --out")
        for key, old, new in changes:
            say(f"--resume-changed: {key}: {old!r} -> {new!r}")
    return (run_dir / "metrics.json").is_file()  # written last, after the student


def clear_run_dir(run_dir: Path) -> list[Path]:
    """Remove a previous run's own files and folders (RUN_FILES, eval*) for --overwrite;
    anything else the user keeps there stays. Returns what was removed."""
    removed = []
    if not run_dir.is_dir():
        return removed
    names = [*RUN_FILES, *sorted(p.name for p in run_dir.glob("eval*"))]
    with writing(run_dir):
        for name in dict.fromkeys(names):
            path = run_dir / name
            if path.is_symlink() or path.is_file():
                path.unlink()  # a link is removed, never followed
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                continue
            removed.append(path)
    return removed


def check_writable(run_dir: Path) -> None:
    """Fail in one line, before any model loads, when the run folder cannot be written."""
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".write-check-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)


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


def truncate_log(path: Path, step: int) -> None:
    """Drop the log records a resumed run will write again (steps after its checkpoint)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not _after(line, step)]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _after(line: str, step: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and (record.get("final") is True or
                                         (isinstance(record.get("step"), int) and record["step"] > step))


def check_finite(model: torch.nn.Module, step: int, last_checkpoint) -> None:
    """Stop before writing weights that hold NaN/inf (a loss can stay finite one step longer)."""
    name = first_non_finite(model)
    if name is not None:
        raise OpticalError(f"weights became non-finite ({name}) after step {step}; stopped. Last good "
                           f"checkpoint: {last_checkpoint or 'none written yet'}. Try a lower train.lr")


# ----------------------------------------------------------------------------- the loop


def distill(recipe: Recipe, resume: bool = False, show_progress: bool = True,
            cache_dir: Path | None = None, overwrite: bool = False, resume_changed: bool = False) -> DistillResult:
    """Run the recipe; write `<output_dir>/student/`, `recipe.yaml`, `metrics.json`, `log.jsonl`.

    `overwrite` replaces a run already in the folder (its own files only, see `clear_run_dir`);
    `resume_changed` lets `resume` continue under a changed recipe, reporting each change."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    cfg = recipe.train
    target = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = Accelerator(mixed_precision=choose_precision(cfg.precision, target), cpu=target.type == "cpu")
    device, main = accelerator.device, accelerator.is_main_process
    set_seed(cfg.seed)
    run_dir = Path(recipe.output_dir)
    cache_dir = cache_dir or default_cache_dir()
    progress = show_progress and main

    def say(text: str) -> None:
        if progress:
            tqdm.write(text)

    def notice(text: str) -> None:  # what --resume-changed and --overwrite did: shown even with --quiet
        if main:
            tqdm.write(text)

    if check_run_dir(run_dir, recipe, resume, overwrite, resume_changed, say=notice):
        say(f"{run_dir}: the run has already finished; nothing to do")
        return finished_result(run_dir)
    if main:
        check_writable(run_dir)  # a read-only --out fails now, not after minutes of model loading
        if overwrite:
            for path in clear_run_dir(run_dir):
                notice(f"--overwrite: removed {path}")
    if main and run_dir.is_dir():
        with writing(run_dir):
            remove_leftovers(run_dir)  # temporary files of writes a kill interrupted

    # -- data
    b = recipe.bitext
    bitext = read_bitext(b.path, b.format, recipe.lang, b.en_column, b.other_column, b.on_bad_line,
                         b.hf_name, b.hf_config, b.hf_split, b.max_pairs, max_bad_fraction=b.max_bad_fraction)
    say(bitext.summary())
    if not progress:  # a warning about the data is shown even with --quiet
        for note in bitext.notes:
            if note.startswith("warning"):
                notice(f"{bitext.source}: {note}")
    train_pairs, heldout = split_heldout(bitext.pairs, b.heldout, cfg.seed)
    if not train_pairs:
        raise OpticalError(f"{bitext.source}: no training pairs left after holding out {len(heldout)}")

    # -- models
    teacher: Teacher = load_teacher(recipe.teacher.kind, recipe.teacher.model, recipe.teacher.max_length,
                                    recipe.teacher.layer, device=device)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        say(f"no checkpoint in {run_dir}; starting from scratch")
    if checkpoint is not None:
        student = Student.load(checkpoint / "student")
        bad = first_non_finite(student)
        if bad is not None:
            raise OpticalError(f"{checkpoint}: the checkpoint holds non-finite weights "
                               f"({bad}); remove it or choose a new --out")
        say(f"resuming from {checkpoint}")
    else:
        student = Student.create(recipe.student.model, teacher.dim, recipe.student.max_length,
                                 recipe.student.prefix, cache_dir, normalize=recipe.student.normalize)
    student.to(device)
    # Mean pooling never reads the encoder's own pooler (BERT, XLM-R): freeze it, or DDP on
    # several processes stops because those parameters never receive a gradient.
    pooler = getattr(student.transformer.auto_model, "pooler", None)
    if isinstance(pooler, torch.nn.Module):
        pooler.requires_grad_(False)
    if recipe.student.freeze_embeddings:
        frozen = student.freeze_word_embeddings()
        say(f"word embeddings frozen ({frozen / 1e6:.1f}M parameters)")

    truncated = {
        "teacher_en": count_truncated(teacher.tokenizer, [p[0] for p in train_pairs], teacher.max_length),
        "student_other": count_truncated(student.tokenizer, [p[1] for p in train_pairs], student.max_length,
                                         student.prefix),
    }
    if any(truncated.values()):
        say(f"truncated to max_length: {truncated['teacher_en']} English sentences (teacher, "
            f"{teacher.max_length} tokens), {truncated['student_other']} {recipe.lang} sentences "
            f"(student, {student.max_length} tokens) of {len(train_pairs)}")

    # -- teacher states (computed once; cached on disk across runs)
    english = [p[0] for p in train_pairs] + [p[0] for p in heldout]
    store_dir = cache_dir if cfg.teacher_cache else None
    if main:
        store, was_cached = TeacherStore.cached(teacher, english, store_dir, show_progress=progress)
        say("teacher states: " + ("read from cache" if was_cached else f"computed for {len(english)} sentences"))
    accelerator.wait_for_everyone()
    if not main:
        store, _ = TeacherStore.cached(teacher, english, store_dir, show_progress=False)
    heldout_teacher = store.sentence[len(train_pairs):]

    # -- warm start: fit the head in closed form before step 1
    warm_report = None
    ws = recipe.warm_start
    if checkpoint is None and ws.method != "none":
        chosen = warm_start_sample(len(train_pairs), ws.pairs, cfg.seed)
        fit_pairs = [train_pairs[i] for i in chosen]
        warm_report = warm_start(student, fit_pairs, store.sentence[chosen], ws.method, ws.ridge,
                                 ws.batch_size, stack_english=ws.english, show_progress=progress,
                                 cache_path=warm_start_cache(cache_dir, recipe, fit_pairs)).as_dict()
        n = len(chosen)
        say(f"warm start ({ws.method}, {n} pairs): held-out cosine to teacher "
            f"{warm_report['heldout_cosine_before']:.3f} → {warm_report['heldout_cosine_after']:.3f}")

    # -- objective and token masses
    objective = build_objective(recipe.loss, recipe.ot)
    teacher_special = set(teacher.tokenizer.all_special_ids)
    student_special = set(student.tokenizer.all_special_ids)
    prefix_length = student.prefix_length()
    teacher_idf = student_idf = None
    if recipe.ot.masses == "idf":
        df, n_sent = document_frequencies(
            store.input_ids[store.offsets[i]:store.offsets[i + 1]].tolist() for i in range(len(train_pairs)))
        teacher_idf = idf_table(df, n_sent, len(teacher.tokenizer))
        df, n_sent = document_frequencies(student.tokenizer([p[1] for p in train_pairs], verbose=False)["input_ids"])
        student_idf = idf_table(df, n_sent, len(student.tokenizer))

    # -- schedule
    world = accelerator.num_processes
    micro = cfg.batch_size
    pairs_per_step = micro * cfg.grad_accum * world
    total_steps = cfg.steps if cfg.steps is not None else max(1, math.ceil(cfg.epochs * len(train_pairs) / pairs_per_step))
    head_params = list(student.head.parameters())
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in student.parameters() if id(p) not in head_ids and p.requires_grad]
    decay = cfg.weight_decay
    optimizer = torch.optim.AdamW([
        {"params": body_params, "lr": cfg.lr, "weight_decay": decay},
        {"params": head_params, "lr": cfg.head_lr or cfg.lr, "weight_decay": 0.0},
    ])
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), max(1, total_steps))
    start_step = 0
    if checkpoint is not None:
        state, tensors = load_trainer_state(checkpoint)
        restore_optimizer(optimizer, tensors, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state)
        start_step = state["step"]
    model, optimizer = accelerator.prepare(student, optimizer)

    log_path = run_dir / "log.jsonl"
    if main:
        with writing(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
        if resume:
            truncate_log(log_path, start_step)  # the steps after the checkpoint run again

    # -- one micro-batch
    n_train = len(train_pairs)
    batches_per_epoch = max(1, n_train // (micro * world))

    @functools.lru_cache(maxsize=1)
    def epoch_order(epoch: int) -> list[int]:
        """The seeded data order of one epoch (built once per epoch, not per micro-batch)."""
        return torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()

    def micro_batch_indices(k: int) -> list[int]:
        epoch, position = divmod(k, batches_per_epoch)
        order = epoch_order(epoch)
        start = (position * world + accelerator.process_index) * micro
        chunk = order[start:start + micro]
        return chunk if chunk else order[:micro]

    def compute_loss(indices: list[int]):
        t = store.batch(indices, device)
        t_mask = ot_mask(t.input_ids, t.attention_mask, teacher_special, recipe.ot.drop_special_tokens)
        features = {k: v.to(device) for k, v in student.tokenize([train_pairs[i][1] for i in indices]).items()}
        s_tokens, s_sentence = model(features)
        s_mask = ot_mask(features["input_ids"], features["attention_mask"], student_special,
                         recipe.ot.drop_special_tokens, prefix_length)
        s_sentence_en = None
        if objective.needs_english_student:
            en_features = {k: v.to(device) for k, v in student.tokenize([train_pairs[i][0] for i in indices]).items()}
            s_sentence_en = model(en_features)[1]
        batch = DistillBatch(
            teacher_tokens=t.token_states, teacher_mask=t_mask, teacher_sentence=t.sentence,
            student_tokens=s_tokens, student_mask=s_mask, student_sentence=s_sentence,
            student_sentence_en=s_sentence_en,
            teacher_masses=idf_masses(t.input_ids, t_mask, teacher_idf) if teacher_idf is not None else None,
            student_masses=idf_masses(features["input_ids"], s_mask, student_idf) if student_idf is not None else None,
        )
        return objective(batch)

    # -- train
    losses: list[float] = []
    last_checkpoint = checkpoint
    model.train()
    bar = tqdm(total=total_steps, initial=start_step, disable=not progress, desc="distill", unit="step")
    started = time.perf_counter()
    for step in range(start_step + 1, total_steps + 1):
        # Saving a checkpoint or scoring the held-out pairs leaves the encoder in eval mode
        # (sentence-transformers' save/encode call .eval()): dropout must be back on.
        model.train()
        step_loss, parts_sum = 0.0, {}
        for accum in range(cfg.grad_accum):
            k = (step - 1) * cfg.grad_accum + accum
            with accelerator.autocast():
                loss, parts = compute_loss(micro_batch_indices(k))
            if not torch.isfinite(loss):
                where_ok = last_checkpoint or "none written yet"
                raise OpticalError(f"loss became {float(loss.detach())} at step {step} ({parts}); stopped. "
                                   f"Last good checkpoint: {where_ok}. Try a lower train.lr or a larger ot.epsilon")
            if accum < cfg.grad_accum - 1:
                with accelerator.no_sync(model):
                    accelerator.backward(loss / cfg.grad_accum)
            else:
                accelerator.backward(loss / cfg.grad_accum)
            step_loss += float(loss.detach()) / cfg.grad_accum
            for name, value in parts.items():
                parts_sum[name] = parts_sum.get(name, 0.0) + value / cfg.grad_accum
        if cfg.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        elapsed = time.perf_counter() - started
        rate = (step - start_step) * pairs_per_step / max(elapsed, 1e-9)
        bar.set_postfix(loss=f"{step_loss:.4f}", pairs_s=f"{rate:.1f}")
        bar.update(1)
        if main:
            _log(log_path, {"step": step, "loss": step_loss, **parts_sum, "lr": scheduler.get_last_lr()[0],
                            "pairs_per_s": rate})
        if cfg.eval_every and step % cfg.eval_every == 0 and main and heldout:
            metrics = heldout_metrics(accelerator.unwrap_model(model), heldout, heldout_teacher)
            _log(log_path, {"step": step, "heldout": metrics})
            say(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == total_steps):
            # every rank checks (the weights are the same on all), so all stop together
            check_finite(accelerator.unwrap_model(model), step, last_checkpoint)
            accelerator.wait_for_everyone()
            if main:
                last_checkpoint = save_checkpoint(run_dir, step, accelerator.unwrap_model(model), optimizer, scheduler,
                                                  {"loss": step_loss})
    bar.close()

    # -- final student
    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(model)
    check_finite(final, total_steps, last_checkpoint)
    write_rank_hash(final, accelerator.process_index)
    student_dir = run_dir / "student"
    metrics = {}
    if main:
        save_student(final, student_dir)
        metrics = heldout_metrics(final, heldout, heldout_teacher)
        summary = {"steps": total_steps, "pairs": len(bitext.pairs), "train_pairs": n_train,
                   "heldout_pairs": len(heldout), "skipped_lines": len(bitext.bad),
                   "truncated": truncated,
                   "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
                   "warm_start": warm_report, "heldout": metrics,
                   "seconds": round(time.perf_counter() - started, 2)}
        _log(log_path, {"step": total_steps, "heldout": metrics, "final": True})
        # metrics.json last: its presence marks the run finished (`resume` then does nothing)
        atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2))
        say(f"student saved to {student_dir}")
    return DistillResult(run_dir, student_dir, total_steps, losses, metrics, warm_report)
