"""Training-step benchmark: where the time of one distillation step goes, and its memory.

Fixed set-up (`recipes/vi/quickstart.yaml` when this was written): teacher `packaged:all-minilm-l6-v2` (max length 64),
student `packaged:multilingual-e5-small` (prefix "query: ", max length 64), batch 32, real
English–Vietnamese pairs (data/vi/train.tsv, LibreOffice help; tests/fixtures/bitext_vi.tsv
repeated when that file is absent), AdamW (lr 2e-5, head 1e-4, weight decay 0.01),
gradient clipping at 1.0, OPTICAL's OT setting (ε 0.05, uniform masses, tol 1e-4, max_iter 100,
envelope gradient).
The step is the one `optical distill` runs: an `optical.training.loop.Distiller` set up from
a recipe (its models, objective, optimizer groups and accelerate wrapper), whose `forward`
and `optimizer_step` are called here and timed phase by phase:

    teacher → student forward (target side, and English side for mse english=true)
           → loss → backward → optimizer (clip + AdamW step + zero_grad)

Four variants run round-robin on the same batches: objective `token_ot + mse` or `mse`,
teacher states computed by the teacher ("cold") or read from a warm TeacherStore (the
cache every run after the first uses). Medians over the measured rounds.

Memory (--memory): one fresh process per (batch, length); texts are joined so every
sequence is exactly `length` tokens on both sides (worst case); warm teacher cache;
three optimizer steps; peak above the memory in use before the first step (CPU: sampled
RSS; CUDA: max_memory_allocated). The first step allocates AdamW's two moment buffers,
so the peak includes optimizer state, gradients and activations.

    python -m benchmarks.train_step [--quick] [--device cpu|cuda] [--threads N] [--memory]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import (  # noqa: E402
    PeakMemory,
    base_parser,
    machine_info,
    markdown_table,
    mib,
    out_dir,
    pick_device,
    synchronize,
    write_results,
)

ROOT = Path(__file__).resolve().parent.parent
TEACHER = "packaged:all-minilm-l6-v2"
STUDENT = "packaged:multilingual-e5-small"
PREFIX = "query: "
PHASES = ("teacher", "student_forward", "loss", "backward", "optimizer")
OBJECTIVES = {"token_ot+mse": (("token_ot", 1.0, {}), ("mse", 1.0, {"english": True})),
              "mse": (("mse", 1.0, {"english": True}),)}
# (32, 256) peaks at ~17 GB RSS on CPU: opt in with --memory-long on a machine that has it.
MEMORY_GRID = [(8, 64), (16, 64), (32, 64), (64, 64), (32, 32), (32, 128)]
MEMORY_GRID_LONG = [(32, 256)]
MEMORY_GRID_QUICK = [(4, 16), (8, 16)]


def load_pairs() -> tuple[list[tuple[str, str]], str]:
    from optical.data.bitext import read_bitext

    for path in (ROOT / "data" / "vi" / "train.tsv", ROOT / "tests" / "fixtures" / "bitext_vi.tsv"):
        if path.is_file():
            return read_bitext(path, "tsv", "vi").pairs, str(path.relative_to(ROOT))
    raise SystemExit("no bitext found (data/vi/train.tsv or tests/fixtures/bitext_vi.tsv)")


# Set from --train-embeddings: optical freezes the word embeddings by default.
TRAIN_EMBEDDINGS = False


class Bench:
    """The real training step: an `optical.training.loop.Distiller` set up as `optical
    distill` sets it up (models, objective, AdamW groups, accelerate), on the benchmark's
    pairs; only the phases are timed from outside."""

    def __init__(self, device, max_length: int, pairs: list[tuple[str, str]]):
        import tempfile

        from optical.losses import build_objective
        from optical.recipe import LossTerm, recipe_from_dict
        from optical.training.loop import Distiller

        recipe = recipe_from_dict({
            "teacher": {"model": TEACHER, "max_length": max_length},
            "student": {"model": STUDENT, "max_length": max_length, "prefix": PREFIX,
                        "freeze_embeddings": not TRAIN_EMBEDDINGS},
            "ot": {"epsilon": 0.05, "masses": "uniform"},
            "warm_start": {"method": "none"},
            # a schedule long enough that the learning rate stays put while we time
            "train": {"lr": 2e-5, "head_lr": 1e-4, "weight_decay": 0.01, "max_grad_norm": 1.0,
                      "warmup_ratio": 0.0, "steps": 10 ** 9},
            "output_dir": tempfile.mkdtemp(prefix="optical-bench-")})
        self.distiller = d = Distiller(recipe, show_progress=False)
        if d.device.type != device.type:
            raise SystemExit(f"the training loop runs on {d.device} here, not {device}")
        d.train_pairs, d.heldout = pairs, []
        d.setup_models()
        d.setup_objective()
        d.setup_optimizer()
        d.model.train()
        self.device, self.student, self.teacher = d.device, d.student, d.teacher
        self.objectives = {name: build_objective([LossTerm(n, w, p) for n, w, p in terms], recipe.ot)
                           for name, terms in OBJECTIVES.items()}

    def warm_cache(self) -> None:
        from optical.training.teacher_store import TeacherStore

        d = self.distiller
        d.store = TeacherStore.build(d.teacher, [p[0] for p in d.train_pairs], show_progress=False)

    def step(self, indices, objective: str, warm: bool) -> dict[str, float]:
        """One optimizer step of the real loop on train_pairs[indices]; seconds per phase."""
        d, dev, times = self.distiller, self.device, {}
        d.objective = self.objectives[objective]

        def mark(name, start):
            synchronize(dev)
            now = time.perf_counter()
            times[name] = now - start
            return now

        synchronize(dev)
        t = time.perf_counter()
        if warm:
            t_out = d.teacher_states(indices)
        else:
            t_out = d.teacher(d.teacher.tokenize([d.train_pairs[i][0] for i in indices]))
        t = mark("teacher", t)
        with d.accelerator.autocast():
            batch = d.forward(indices, teacher=t_out)
            t = mark("student_forward", t)
            loss, _ = d.objective(batch)
        t = mark("loss", t)
        d.accelerator.backward(loss)
        t = mark("backward", t)
        d.optimizer_step()
        mark("optimizer", t)
        times["total"] = sum(times[p] for p in PHASES)
        times["student_tokens"] = int(batch.student_tokens.shape[1])
        times["teacher_tokens"] = int(t_out.token_states.shape[1])
        return times


def isolated_loss_seconds(bench: "Bench", indices, repeats: int = 20) -> dict[str, dict[str, float]]:
    """Loss forward + its backward down to the student's outputs only (no encoder), per
    objective, on one fixed batch: what the OT term itself costs, without the noise of
    the encoder's backward. Medians of `repeats`."""
    import dataclasses

    d, dev = bench.distiller, bench.device
    d.objective = bench.objectives["token_ot+mse"]  # asks for the English side too
    with torch.no_grad():
        full = d.forward(indices)
    out = {}
    for name, obj in bench.objectives.items():
        samples = {"forward": [], "backward": []}
        for r in range(repeats + 2):
            leaves = [x.detach().clone().requires_grad_(True)
                      for x in (full.student_tokens, full.student_sentence, full.student_sentence_en)]
            batch = dataclasses.replace(full, student_tokens=leaves[0], student_sentence=leaves[1],
                                        student_sentence_en=leaves[2])
            synchronize(dev)
            start = time.perf_counter()
            loss, _ = obj(batch)
            synchronize(dev)
            middle = time.perf_counter()
            loss.backward()
            synchronize(dev)
            end = time.perf_counter()
            if r >= 2:
                samples["forward"].append(middle - start)
                samples["backward"].append(end - middle)
        out[name] = {k: statistics.median(v) for k, v in samples.items()}
        out[name]["total"] = out[name]["forward"] + out[name]["backward"]
    out["shape"] = {"batch": len(indices), "teacher_tokens": int(full.teacher_tokens.shape[1]),
                    "student_tokens": int(full.student_tokens.shape[1])}
    return out


# ----------------------------------------------------------------------------- timing


def time_steps(device, batch_size: int, max_length: int, rounds: int, warmup: int, progress=print) -> dict:
    pairs, source = load_pairs()
    rng = random.Random(0)
    batches = [rng.sample(range(len(pairs)), min(batch_size, len(pairs))) for _ in range(rounds + warmup)]
    # sentences the batches use, renumbered so that the store covers exactly them
    used = sorted({i for b in batches for i in b})
    local = {i: k for k, i in enumerate(used)}
    sub_pairs = [pairs[i] for i in used]
    batches = [[local[i] for i in b] for b in batches]

    started = time.perf_counter()
    bench = Bench(device, max_length, sub_pairs)
    setup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    bench.warm_cache()
    store_seconds = time.perf_counter() - started

    variants = [(obj, warm) for obj in OBJECTIVES for warm in (False, True)]
    samples = {f"{o}|{'warm' if w else 'cold'}": [] for o, w in variants}
    memory = {}
    for r, indices in enumerate(batches):
        for objective, warm in variants:
            key = f"{objective}|{'warm' if warm else 'cold'}"
            measure_memory = r == warmup  # first measured round
            gc.collect()
            if measure_memory:
                with PeakMemory(device) as peak:
                    times = bench.step(indices, objective, warm)
                memory[key] = {"added_mib": mib(peak.added_bytes), "peak_mib": mib(peak.peak_bytes),
                               "kind": peak.kind}
            else:
                times = bench.step(indices, objective, warm)
            if r >= warmup:
                samples[key].append(times)
        if r >= warmup:
            progress(f"round {r - warmup + 1}/{rounds}: " + ", ".join(
                f"{k} {samples[k][-1]['total']:.2f}s" for k in samples))

    summary = {}
    for key, rows in samples.items():
        summary[key] = {name: statistics.median(row[name] for row in rows) for name in PHASES + ("total",)}
        summary[key]["all_totals"] = [row["total"] for row in rows]
        summary[key]["student_tokens_mean"] = statistics.mean(row["student_tokens"] for row in rows)
        summary[key]["teacher_tokens_mean"] = statistics.mean(row["teacher_tokens"] for row in rows)
        summary[key]["memory"] = memory.get(key)
    # Paired per-round ratios (same batch, neighbouring in time) are less noisy than a
    # ratio of medians on a shared machine; both are reported.
    overhead = {}
    for mode in ("warm", "cold"):
        ot_rows, mse_rows = samples[f"token_ot+mse|{mode}"], samples[f"mse|{mode}"]
        paired = [o["total"] / m["total"] - 1 for o, m in zip(ot_rows, mse_rows)]
        extra_phases = [(o["loss"] + o["backward"]) - (m["loss"] + m["backward"]) for o, m in zip(ot_rows, mse_rows)]
        ot_median, mse_median = summary[f"token_ot+mse|{mode}"], summary[f"mse|{mode}"]
        overhead[mode] = {
            "ratio_of_median_totals": ot_median["total"] / mse_median["total"] - 1,
            "median_paired_ratio": statistics.median(paired),
            "loss_plus_backward_extra_over_mse_step": statistics.median(extra_phases) / mse_median["total"],
        }
    teacher_share = {key: s["teacher"] / s["total"] for key, s in summary.items()}
    isolated = isolated_loss_seconds(bench, batches[0])
    for mode in ("warm", "cold"):
        overhead[mode]["isolated_loss_extra_over_mse_step"] = (
            isolated["token_ot+mse"]["total"] - isolated["mse"]["total"]) / summary[f"mse|{mode}"]["total"]
    return {"pairs_source": source, "n_pairs_used": len(sub_pairs), "setup_seconds": setup_seconds,
            "teacher_store_build_seconds": store_seconds, "rounds": rounds, "warmup_rounds": warmup,
            "variants": summary, "ot_overhead": overhead, "teacher_share": teacher_share,
            "isolated_loss": isolated}


# ----------------------------------------------------------------------------- memory


def full_length_pairs(pairs, n: int, length: int, rng: random.Random) -> list[tuple[str, str]]:
    """n pairs each long enough to be truncated at `length` tokens on both sides."""
    out = []
    words_needed = length * 2  # tokens ≥ words for both tokenizers; truncation does the rest
    for _ in range(n):
        en, other = [], []
        while len(" ".join(en).split()) < words_needed or len(" ".join(other).split()) < words_needed:
            e, o = pairs[rng.randrange(len(pairs))]
            en.append(e)
            other.append(o)
        out.append((" ".join(en), " ".join(other)))
    return out


def memory_child(device, batch_size: int, length: int, objective: str, steps: int = 3) -> dict:
    pairs, _ = load_pairs()
    rng = random.Random(batch_size * 1000 + length)
    batch_pairs = full_length_pairs(pairs, batch_size, length, rng)
    bench = Bench(device, length, batch_pairs)
    bench.warm_cache()
    indices = list(range(batch_size))
    gc.collect()
    with PeakMemory(device) as peak:
        times = [bench.step(indices, objective, warm=True) for _ in range(steps)]
    params = sum(p.numel() for p in bench.student.parameters())
    return {"batch": batch_size, "length": length, "objective": objective,
            "student_tokens": times[-1]["student_tokens"], "teacher_tokens": times[-1]["teacher_tokens"],
            "before_mib": mib(peak.baseline_bytes), "peak_mib": mib(peak.peak_bytes),
            "added_mib": mib(peak.added_bytes), "kind": peak.kind,
            "step_seconds_last": times[-1]["total"], "student_parameters": params}


def memory_grid(device, grid, objective: str, threads, progress=print) -> list[dict]:
    rows = []
    for batch_size, length in grid:
        cmd = [sys.executable, "-m", "benchmarks.train_step", "--memory-child", str(batch_size), str(length),
               "--objective", objective, "--device", str(device)]
        if threads:
            cmd += ["--threads", str(threads)]
        if TRAIN_EMBEDDINGS:
            cmd += ["--train-embeddings"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:  # e.g. out of memory: record it, keep the other rows
            reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            rows.append({"batch": batch_size, "length": length, "error": reason})
            progress(f"memory batch {batch_size} length {length}: failed ({reason})")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        progress(f"memory batch {batch_size} length {length}: +{row['added_mib']:.0f} MiB "
                 f"(peak {row['peak_mib']:.0f} MiB, step {row['step_seconds_last']:.2f}s)")
    return rows


# ----------------------------------------------------------------------------- report


def to_markdown(payload: dict) -> str:
    s, m = payload["settings"], payload["machine"]
    lines = [f"# Training step ({s['device']}, {m.get('torch_threads')} torch thread(s))", "",
             f"`{payload['command'].strip()}` — teacher `{TEACHER}`, student `{STUDENT}`; "
             f"{m.get('cpu_model', m.get('processor'))}, {m.get('cpu_count')} cores.", ""]
    if "timing" in payload:
        lines += [f"Batch {s['batch_size']}, max length {s['max_length']}, pairs from "
                  f"`{payload['timing']['pairs_source']}`; median of {payload['timing']['rounds']} rounds "
                  f"(after {payload['timing']['warmup_rounds']} warm-up).", ""]
        lines += timing_markdown(payload)
    if payload.get("memory"):
        lines += memory_markdown(payload["memory"])
    if payload.get("verdict"):
        lines += ["", "Verdict: " + ", ".join(f"{k} = {v}" for k, v in payload["verdict"].items())]
    return "\n".join(lines)


def timing_markdown(payload: dict) -> list[str]:
    lines = []
    headers = ["objective", "teacher states", *PHASES, "step (s)", "teacher share", "peak memory added (MiB)"]
    rows = []
    for key, v in payload["timing"]["variants"].items():
        objective, mode = key.split("|")
        mem = v.get("memory") or {}
        rows.append([objective, "teacher forward (cold)" if mode == "cold" else "TeacherStore (warm cache)",
                     *[v[p] for p in PHASES], v["total"], f"{payload['timing']['teacher_share'][key]:.1%}",
                     mem.get("added_mib", float("nan"))])
    lines.append(markdown_table(headers, rows))
    lines += ["", "Token-level OT overhead (token_ot + mse vs mse alone, same batches):", ""]
    lines.append(markdown_table(
        ["teacher states", "ratio of median steps", "median of paired per-round ratios",
         "(extra loss + backward) / mse step", "isolated loss fwd+bwd extra / mse step"],
        [[mode, f"{o['ratio_of_median_totals']:+.1%}", f"{o['median_paired_ratio']:+.1%}",
          f"{o['loss_plus_backward_extra_over_mse_step']:+.1%}",
          f"{o['isolated_loss_extra_over_mse_step']:+.2%}"]
         for mode, o in payload["timing"]["ot_overhead"].items()]))
    iso = payload["timing"].get("isolated_loss")
    if iso:
        shape = iso["shape"]
        lines += ["", f"The losses alone (forward, and backward down to the student's outputs), batch {shape['batch']}, "
                  f"{shape['teacher_tokens']} teacher × {shape['student_tokens']} student tokens, median of 20:", "",
                  markdown_table(["objective", "forward (ms)", "backward (ms)", "total (ms)"],
                                 [[name, v["forward"] * 1e3, v["backward"] * 1e3, v["total"] * 1e3]
                                  for name, v in iso.items() if name != "shape"])]
    return lines


def memory_markdown(mem: dict) -> list[str]:
    lines = []
    if mem:
        kind = next((r["kind"] for r in mem["rows"] if "kind" in r), "?")
        lines += ["", f"Peak memory of a training step ({kind}), objective "
                  f"`{mem['objective']}`, warm teacher cache, every sequence exactly `length` tokens, "
                  "3 steps in a fresh process:", ""]
        lines.append(markdown_table(
            ["batch", "length", "student tokens", "in use before (MiB)", "peak (MiB)", "added by training (MiB)",
             "step (s)"],
            [[r["batch"], r["length"], r["student_tokens"], r["before_mib"], r["peak_mib"], r["added_mib"],
              r["step_seconds_last"]] if "error" not in r else [r["batch"], r["length"], "failed: " + r["error"],
                                                               "", "", "", ""] for r in mem["rows"]]))
    return lines


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--memory", action="store_true", help="also the memory grid (one process per size)")
    parser.add_argument("--memory-only", action="store_true", help="only the memory grid")
    parser.add_argument("--memory-long", action="store_true", help="add batch 32 × length 256 (~17 GB on CPU)")
    parser.add_argument("--objective", default="token_ot+mse", choices=list(OBJECTIVES))
    parser.add_argument("--train-embeddings", action="store_true",
                        help="also train the word embeddings (optical freezes them by default)")
    parser.add_argument("--memory-child", nargs=2, type=int, metavar=("BATCH", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global TRAIN_EMBEDDINGS
    TRAIN_EMBEDDINGS = args.train_embeddings
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.memory_child:
        print(json.dumps(memory_child(device, *args.memory_child, args.objective)))
        return {}
    batch_size = args.batch_size or (4 if args.quick else 32)
    max_length = 16 if args.quick else args.max_length
    rounds = args.repeats or (2 if args.quick else 7)
    payload = {"benchmark": "train_step",
               "command": "python -m benchmarks.train_step " + " ".join(argv if argv is not None else sys.argv[1:]),
               "settings": {"batch_size": batch_size, "max_length": max_length, "device": str(device),
                            "teacher": TEACHER, "student": STUDENT, "train_embeddings": args.train_embeddings, "precision": "bf16 autocast" if
                            device.type == "cuda" else "fp32", "quick": args.quick},
               "machine": machine_info(device)}
    if not args.memory_only:
        payload["timing"] = time_steps(device, batch_size, max_length, rounds, warmup=1)
    if args.memory or args.memory_only:
        grid = MEMORY_GRID_QUICK if args.quick else MEMORY_GRID + (MEMORY_GRID_LONG if args.memory_long else [])
        payload["memory"] = {"objective": args.objective,
                             "rows": memory_grid(device, grid, args.objective, args.threads)}
    if "timing" in payload:
        t = payload["timing"]
        payload["verdict"] = {
            "ot_overhead_warm_cache": round(t["ot_overhead"]["warm"]["median_paired_ratio"], 4),
            "ot_overhead_cold_teacher": round(t["ot_overhead"]["cold"]["median_paired_ratio"], 4),
            "ot_loss_isolated_extra_over_mse_step": round(t["ot_overhead"]["warm"]["isolated_loss_extra_over_mse_step"], 5),
            "target_ot_overhead_at_most_15pct_met": t["ot_overhead"]["warm"]["median_paired_ratio"] <= 0.15
            and t["ot_overhead"]["cold"]["median_paired_ratio"] <= 0.15,
            "teacher_share_cold": round(t["teacher_share"]["token_ot+mse|cold"], 4),
            "teacher_share_warm": round(t["teacher_share"]["token_ot+mse|warm"], 4),
        }
    name = "train_step" if "timing" in payload else "train_memory"
    json_path, md_path = write_results(name, out_dir(args), payload, to_markdown(payload))
    print(f"wrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
