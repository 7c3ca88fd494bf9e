"""Training-loop throughput: the real `optical distill` loop against a plain PyTorch loop.

Both sides train the same student (`packaged:multilingual-e5-small`, word embeddings frozen)
towards the same teacher (`packaged:all-minilm-l6-v2`) on the same pairs in the same order,
with the same batch size, maximum length, objective and optimizer (AdamW, clipping at 1.0):

- **optical**: `optical.training.loop.distill(recipe)` as `optical distill` runs it (teacher
  states from the on-disk cache, accelerate, the held-out check and checkpoints switched off);
  its speed is read from the `pairs_per_s` it logs per step, between the end of the warm-up
  steps and the last step.
- **reference**: about forty lines of plain PyTorch: batches tokenised before the clock
  starts, teacher outputs computed before it too and kept in memory on the device, one
  forward and backward per student pass, the same loss modules, no scheduler or logging.

`mse` (with `english: true`, as the recipes) makes two student passes per pair on both sides;
`token_ot+mse` adds the OT term (uniform masses, ε 0.05) on both sides. The JSON gives each
configuration's `ratio` = optical pairs/s ÷ reference pairs/s (target ≥ 0.9).

    python -m benchmarks.loop_throughput [--quick] [--device cpu|cuda] [--batch-sizes 32,128]
                                         [--objectives mse,token_ot+mse] [--steps N] [--warmup N] [--rounds R]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import base_parser, machine_info, markdown_table, out_dir, pick_device, synchronize, write_results  # noqa: E402,E501

ROOT = Path(__file__).resolve().parent.parent
TEACHER = "packaged:all-minilm-l6-v2"
STUDENT = "packaged:multilingual-e5-small"
OBJECTIVES = {"mse": [{"name": "mse", "weight": 1.0, "english": True}],
              "token_ot+mse": [{"name": "token_ot", "weight": 1.0}, {"name": "mse", "weight": 100.0, "english": True}]}


def bitext_path() -> Path:
    for path in (ROOT / "data" / "vi" / "train.tsv", ROOT / "tests" / "fixtures" / "bitext_vi.tsv"):
        if path.is_file():
            return path
    raise SystemExit("no bitext found (data/vi/train.tsv or tests/fixtures/bitext_vi.tsv)")


def make_recipe(objective: str, batch: int, steps: int, max_length: int, out: Path, teacher: str = TEACHER,
                student: str = STUDENT):
    from optical.recipe import recipe_from_dict

    return recipe_from_dict({
        "teacher": {"model": teacher, "max_length": max_length},
        "student": {"model": student, "max_length": max_length},
        "bitext": {"path": str(bitext_path()), "format": "tsv", "heldout": 0},
        "loss": OBJECTIVES[objective],
        "ot": {"epsilon": 0.05, "masses": "uniform"},
        "warm_start": {"method": "none"},
        "train": {"lr": 2e-5, "head_lr": 1e-4, "batch_size": batch, "steps": steps, "warmup_ratio": 0.0,
                  "checkpoint_every": 0, "eval_every": 0, "seed": 1},
        "output_dir": str(out)})


def optical_rate(recipe, warmup: int) -> float:
    """Pairs/s of the real loop between step `warmup` and the last step, from its log."""
    from optical.training.loop import distill

    result = distill(recipe, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in records if "loss" in r}
    per_step = recipe.train.batch_size * recipe.train.grad_accum
    # the loop logs cumulative pairs/s since its first step: elapsed(k) = k · pairs per step / rate(k)
    elapsed = {k: k * per_step / r["pairs_per_s"] for k, r in steps.items()}
    last = max(steps)
    return (last - warmup) * per_step / (elapsed[last] - elapsed[warmup])


def reference_rate(recipe, device, warmup: int) -> float:
    """The plain loop on the same pairs, order, models and losses; pairs/s after `warmup` steps."""
    from optical.data.bitext import read_bitext
    from optical.losses import DistillBatch, build_objective
    from optical.models.student import Student
    from optical.models.teacher import load_teacher
    from optical.ot.masks import ot_mask

    cfg, batch = recipe.train, recipe.train.batch_size
    pairs = read_bitext(recipe.bitext.path, "tsv", "vi").pairs
    per_epoch = max(1, len(pairs) // batch)

    def batch_indices(step: int) -> list[int]:  # the loop's data order: a seeded permutation per epoch
        epoch, position = divmod(step, per_epoch)
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        return order[position * batch:(position + 1) * batch] or order[:batch]

    teacher = load_teacher("sentence-transformers", recipe.teacher.model, recipe.teacher.max_length, device=device)
    student = Student.create(recipe.student.model, teacher.dim, recipe.student.max_length).to(device)
    student.freeze_word_embeddings()
    objective = build_objective(recipe.loss, recipe.ot).to(device)
    # before the clock: every batch tokenised, every teacher output computed, all on the device
    batches = []
    with torch.no_grad():
        for step in range(cfg.steps):
            chunk = [pairs[i] for i in batch_indices(step)]
            t = teacher(teacher.tokenize([en for en, _ in chunk]))
            t_mask = ot_mask(t.input_ids, t.attention_mask, set(teacher.tokenizer.all_special_ids), True)
            other = {k: v.to(device) for k, v in student.tokenize([o for _, o in chunk]).items()}
            english = {k: v.to(device) for k, v in student.tokenize([en for en, _ in chunk]).items()}
            batches.append((t, t_mask, other, english))
    special = set(student.tokenizer.all_special_ids)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    student.train()
    start = None
    for step, (t, t_mask, other, english) in enumerate(batches):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        with autocast:
            s_tokens, s_sentence = student(other)
            s_sentence_en = student(english)[1] if objective.needs_english_student else None
            loss, _ = objective(DistillBatch(
                teacher_tokens=t.token_states, teacher_mask=t_mask, teacher_sentence=t.sentence,
                student_tokens=s_tokens, student_mask=ot_mask(other["input_ids"], other["attention_mask"], special, True),
                student_sentence=s_sentence, student_sentence_en=s_sentence_en))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return (len(batches) - warmup) * batch / (time.perf_counter() - start)


def to_markdown(payload: dict) -> str:
    rows = [[r["objective"], r["batch_size"], f"{r['optical_pairs_per_s']:.1f}", f"{r['reference_pairs_per_s']:.1f}",
             f"{r['ratio']:.2f}"] for r in payload["configurations"]]
    return "\n".join([
        "# Training-loop throughput: optical vs a plain PyTorch loop", "",
        f"Device: {payload['machine'].get('device_name', payload['machine'].get('device'))}; "
        f"max length {payload['max_length']}; steps {payload['steps']} (the first {payload['warmup']} not timed); "
        "pairs/s; ratio = optical ÷ reference (target ≥ 0.9).", "",
        markdown_table(["objective", "batch", "optical pairs/s", "reference pairs/s", "ratio"], rows)])


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default 32,128; --quick 8)")
    parser.add_argument("--objectives", default=None, help="comma-separated (default mse,token_ot+mse; --quick mse)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 40; --quick 12)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 10; --quick 4)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each loop, alternating; medians reported")
    parser.add_argument("--teacher", default=TEACHER, help="teacher model spec")
    parser.add_argument("--student", default=STUDENT, help="student model spec")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if device.type != ("cuda" if torch.cuda.is_available() else "cpu"):
        raise SystemExit(f"optical trains on {'cuda' if torch.cuda.is_available() else 'cpu'} here, not {device}")
    batches = [int(b) for b in (args.batch_sizes or ("8" if args.quick else "32,128")).split(",")]
    objectives = (args.objectives or ("mse" if args.quick else "mse,token_ot+mse")).split(",")
    steps, warmup = args.steps or (12 if args.quick else 40), args.warmup or (4 if args.quick else 10)
    max_length = 32 if args.quick else args.max_length
    if not 0 < warmup < steps:
        raise SystemExit("--warmup must be between 1 and --steps - 1")
    configurations = []
    with tempfile.TemporaryDirectory(prefix="optical-loop-") as tmp:
        os.environ.setdefault("OPTICAL_CACHE", str(Path(tmp) / "cache"))  # keep the teacher cache out of ~
        for objective in objectives:
            for batch in batches:
                recipe = make_recipe(objective, batch, steps, max_length, Path(tmp) / f"{objective}-{batch}",
                                     args.teacher, args.student)
                refs, opts = [], []
                for round_ in range(args.rounds):  # alternate the two, so drifting machine load hits both
                    refs.append(reference_rate(recipe, device, warmup))
                    run = recipe if round_ == 0 else make_recipe(objective, batch, steps, max_length,
                                                                 Path(tmp) / f"{objective}-{batch}-{round_}",
                                                                 args.teacher, args.student)
                    opts.append(optical_rate(run, warmup))
                ref, opt = statistics.median(refs), statistics.median(opts)
                configurations.append({"objective": objective, "batch_size": batch, "optical_pairs_per_s": opt,
                                       "reference_pairs_per_s": ref, "ratio": opt / ref,
                                       "optical_rounds": opts, "reference_rounds": refs})
                print(f"{objective} B {batch}: optical {opt:.1f} pairs/s, reference {ref:.1f}, ratio {opt / ref:.2f}")
    payload = {"benchmark": "loop_throughput", "machine": machine_info(device), "steps": steps, "warmup": warmup,
               "max_length": max_length, "teacher": args.teacher, "student": args.student, "quick": args.quick, "configurations": configurations}
    json_path, md_path = write_results("loop_throughput", out_dir(args), payload, to_markdown(payload))
    print(f"wrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
