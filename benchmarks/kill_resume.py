"""Kill -9 harness: `optical distill` killed with SIGKILL again and again, resumed with
`--resume` after each kill, must end bit-identical to an unbroken run (CPU, dropout on).

Both runs are `python -m optical distill` subprocesses on the same recipe and seed: tiny
offline models (tests/tiny_models.py: a sentence-transformers teacher, hidden 32, and a
BERT student, hidden 24, whose dropout is on), the test bitext (tests/fixtures/bitext_vi.tsv,
40 pairs, 8 held out), token_ot + mse, a checkpoint every `--checkpoint-every` steps. Each
run has its own fresh cache folder, so the killed run also computes, caches and rereads the
teacher states and the warm start itself.

The killed run is started, killed at a planned moment, started again with `--resume`,
killed again, ... `--kills` times, then resumed to the end. Kill moments (`kind`):

  startup            a random time after the start, within the unbroken run's start-up
                     (imports, models loading, teacher cache, warm start); at the latest
                     when this start logs its first step
  training           a random time (0 to 2 step times) after a random step was logged
  checkpoint-write   as soon as a checkpoint's temporary folder (`checkpoints/.step-*`)
                     appears: inside the checkpoint write
  checkpoint-rename  the checkpoint folder is complete, not yet renamed into place
  latest             the new checkpoint folder is in place, `checkpoints/latest` not yet
                     replaced
  log-truncate       a resumed run is replacing log.jsonl (dropping the steps it redoes)
  final-write        as soon as the final student's temporary folder (`.student.*.tmp`)
                     appears: inside the final save
  final-rename       the final student is written aside, not yet renamed to `student/`
  before-metrics     `student/` and the last log line are written, `metrics.json` not yet

The last three come last (the run is then at its last step). Every kill is SIGKILL from
this process to the training process. The three "not yet" moments last microseconds, too
short to hit by timing: for them the training process runs with
benchmarks/kill_hook/sitecustomize.py on its PYTHONPATH, which stops it (SIGSTOP) just
before that `os.replace`; this script then sends the SIGKILL. Nothing in optical changes.

After each kill the script records what the kill left on disk (temporary files of an
interrupted write, which checkpoint `latest` names, whether that checkpoint is complete).
Planned training kills fall on steps 1 to steps-2, so the run cannot end before them. A
polled write can be missed on a busy machine; a checkpoint-write kill then falls on a later
checkpoint write or the final save, a final-write kill on the finished `student/`
(counted as `polled_moments_missed`).

At the end it compares with the unbroken run, byte for byte: every log.jsonl record (losses,
loss parts, learning rate, held-out metrics; without the timing field `pairs_per_s`), every
weight file under `student/` and `checkpoints/` (`*.safetensors`: encoder, head, optimizer
state), every `trainer_state.json` (step, scheduler, RNG states), the list of files, every
other file (configs, tokenizer files, the model card README with the run's own folder
masked) and metrics.json (without `seconds`). That is the verdict.

    python -m benchmarks.kill_resume [--kills 20] [--seed S] [--steps 40] [--json OUT]

Exit status 0 when the runs are identical and every planned kill happened, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOOK_DIR = Path(__file__).resolve().parent / "kill_hook"
TESTS = ROOT / "tests"
BITEXT = TESTS / "fixtures" / "bitext_vi.tsv"

TIMED = ("startup", "training")
POLLED = ("checkpoint-write", "final-write")
PAUSED = ("checkpoint-rename", "latest", "log-truncate", "final-rename", "before-metrics")
FINAL = ("final-write", "final-rename", "before-metrics")
KINDS = TIMED + POLLED + PAUSED


# ----------------------------------------------------------------------------- set-up


def build_tiny_models(folder: Path) -> tuple[Path, Path]:
    """The tests' tiny teacher and student (tests/tiny_models.py), built offline."""
    sys.path.insert(0, str(TESTS))
    import tiny_models

    teacher = tiny_models.build_sentence_transformer(folder / "teacher_st", hidden=32, seed=1)
    student = tiny_models.build_hf_encoder(folder / "student", hidden=24, seed=5)
    return teacher, student


def dropout_of(student: Path) -> dict:
    """The dropout probabilities in the student's config.json (BERT names)."""
    config = json.loads((Path(student) / "config.json").read_text(encoding="utf-8"))
    return {k: config[k] for k in ("hidden_dropout_prob", "attention_probs_dropout_prob") if k in config}


def distill_command(python: str, teacher: Path, student: Path, out: Path, args, resume: bool) -> list[str]:
    command = [python, "-m", "optical", "distill", "--teacher-model", str(teacher), "--student", str(student),
               "--bitext", str(BITEXT), "--lang", "vi", "--out", str(out), "--steps", str(args.steps),
               "--set", "bitext.heldout=8", "--set", "train.batch_size=8", "--set", "train.lr=5e-4",
               "--set", "train.warmup_ratio=0.1", "--set", f"train.seed={args.train_seed}",
               "--set", f"train.checkpoint_every={args.checkpoint_every}",
               "--set", f"train.eval_every={args.eval_every}", "--quiet"]
    return command + (["--resume"] if resume else [])


def child_env(cache: Path, threads: int, pause: dict | None = None) -> dict:
    env = dict(os.environ)
    env.pop("OPTICAL_KILL_PAUSE", None)
    paths = [str(ROOT)] + ([p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if pause is not None:
        paths.insert(0, str(HOOK_DIR))
        env["OPTICAL_KILL_PAUSE"] = json.dumps(pause)
    env.update(PYTHONPATH=os.pathsep.join(paths), OPTICAL_CACHE=str(cache), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONHASHSEED", None)  # each process draws its own hash seed, as a real restart does
    return env


# ----------------------------------------------------------------------------- reading a run folder


def log_state(run_dir: Path) -> tuple[int | None, int | None]:
    """(inode of log.jsonl, last step with a logged loss) — (None, None) without a log."""
    path = run_dir / "log.jsonl"
    try:
        inode = path.stat().st_ino
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, None
    last = None
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "loss" in record and isinstance(record.get("step"), int):
            last = record["step"]
    return inode, last


def latest_checkpoint(run_dir: Path) -> tuple[str | None, int | None, bool | None]:
    """(name `latest` points at, its step, whether it is complete and readable)."""
    marker = run_dir / "checkpoints" / "latest"
    if not marker.is_file():
        return None, None, None
    name = marker.read_text(encoding="utf-8").strip()
    folder = marker.parent / name
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        needed = [folder / "optimizer.safetensors", folder / "student" / "model.safetensors",
                  folder / "student" / "modules.json"]
        complete = all(p.is_file() and p.stat().st_size > 0 for p in needed) and isinstance(state.get("step"), int)
        return name, state.get("step"), complete
    except (OSError, ValueError):
        return name, None, False


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files and folders of interrupted writes (what the next start removes)."""
    found = [p.name for p in run_dir.glob(".*.tmp")]
    found += ["checkpoints/" + p.name for p in (run_dir / "checkpoints").glob(".*")]
    return sorted(found)


def file_hashes(folder: Path, run_dir: Path | None = None) -> dict[str, str]:
    """sha256 of every file under `folder`; in the model card (README.md) the run's own folder
    is replaced by a placeholder first: the two runs write to different folders by design."""
    if not folder.is_dir():
        return {}
    hashes = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if run_dir is not None and p.name == "README.md":
            data = data.replace(str(run_dir).encode(), b"<run>")
        hashes[str(p.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return hashes


def log_records(run_dir: Path) -> list[dict]:
    """Every log.jsonl record without its timing field."""
    records = []
    for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record.pop("pairs_per_s", None)
        records.append(record)
    return records


# ----------------------------------------------------------------------------- one launch


def checkpoint_step(target: int, every: int, steps: int) -> int:
    """The first step at or after `target` that writes a checkpoint."""
    return min(steps, -(-target // every) * every) if every else steps


def pause_for(kind: str, run_dir: Path, ckpt: int) -> dict | None:
    name = f"step-{ckpt:06d}"
    patterns = {
        "checkpoint-rename": {"dst": re.escape(str(run_dir / "checkpoints" / name)) + "$"},
        "latest": {"dst": re.escape(str(run_dir / "checkpoints" / "latest")) + "$", "src_text": name + "\n"},
        "log-truncate": {"dst": re.escape(str(run_dir / "log.jsonl")) + "$"},
        "final-rename": {"dst": re.escape(str(run_dir / "student")) + "$"},
        "before-metrics": {"dst": re.escape(str(run_dir / "metrics.json")) + "$"},
    }
    return patterns.get(kind)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def reap(process: subprocess.Popen, block: bool) -> tuple[str, int] | None:
    """('stopped', sig) / ('exited', code) / None while it runs. Reaps an ended process."""
    pid, status = os.waitpid(process.pid, 0 if block else os.WNOHANG | os.WUNTRACED)
    if pid == 0:
        return None
    if os.WIFSTOPPED(status):
        return "stopped", os.WSTOPSIG(status)
    process.returncode = os.waitstatus_to_exitcode(status)
    return "exited", process.returncode


def launch(command: list[str], env: dict, run_dir: Path, kind: str | None, target: int | None,
           timing: dict, rng: random.Random, log_file: Path, ckpt: int | None = None, start: int = 0) -> dict:
    """Start one training process; kill it at the moment `kind` asks for (None: let it end).
    `start`: the step of the checkpoint it resumes from (0: none)."""
    inode_before, _ = log_state(run_dir)
    student_before = _inode(run_dir / "student")
    stale = set(leftovers(run_dir))  # left by the previous kill: the start removes them, they mark nothing
    trust_log = inode_before is None or "--resume" not in command  # a resumed run rewrites the log first
    with open(log_file, "ab") as out:
        out.write(("\n$ " + " ".join(command) + (f"   # kill: {kind}" if kind else "") + "\n").encode())
        out.flush()
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   start_new_session=True)
    fire_at = started + rng.uniform(0.0, timing["startup_s"]) if kind == "startup" else None
    record = {"kind": kind, "target_step": target, "checkpoint_step": ckpt}
    ended, killed_by_us, hit = None, False, kind not in POLLED
    while ended is None:
        now = time.monotonic()
        state = reap(process, block=False)
        if state is not None and state[0] == "exited":
            ended = state
            break
        fire = state is not None  # stopped by the pause hook
        if not fire and kind in TIMED:
            inode, last = log_state(run_dir)
            trust_log = trust_log or (inode is not None and inode != inode_before)
            if kind == "training" and fire_at is None and trust_log and last is not None and last >= target - 1:
                fire_at = now + rng.uniform(0.0, timing["step_s"])
            if kind == "startup" and trust_log and last is not None and last > start:
                fire = True  # the start-up is over (this start is shorter than the unbroken one's): kill now
        if not fire and fire_at is not None and now >= fire_at:
            fire = True
        if not fire and kind == "checkpoint-write":
            for entry in (run_dir / "checkpoints").glob(".step-*") if (run_dir / "checkpoints").is_dir() else ():
                found = re.match(r"\.step-(\d+)[.-]", entry.name)
                if found and int(found.group(1)) >= ckpt and "checkpoints/" + entry.name not in stale:
                    fire = hit = True
        if not fire and kind in POLLED:
            # the final save; for checkpoint-write only when every checkpoint write was missed
            # (polling can miss one on a busy machine): kill there rather than let the run end
            if any(entry.name not in stale for entry in run_dir.glob(".student[.-]*.tmp")):
                fire, hit = True, kind == "final-write"
            elif _inode(run_dir / "student") not in (None, student_before):
                fire, hit = True, False
        if fire:
            os.killpg(process.pid, signal.SIGKILL)
            killed_by_us = True
            record["after_s"] = round(time.monotonic() - started, 3)
            record["paused_by_hook"] = state is not None
            ended = reap(process, block=True)
            while ended[0] == "stopped":  # (cannot happen after SIGKILL; be safe)
                ended = reap(process, block=True)
            break
        time.sleep(0.0005 if kind in POLLED else 0.005)
    record["wall_s"] = round(time.monotonic() - started, 3)
    record["killed"] = killed_by_us
    record["moment_hit"] = killed_by_us and hit  # polled kinds: the planned write was seen in progress
    record["returncode"] = ended[1]
    _, last = log_state(run_dir)
    record["last_logged_step"] = last
    record["left_on_disk"] = [name for name in leftovers(run_dir) if name not in stale]  # by this kill
    record["latest"], record["latest_step"], record["latest_complete"] = latest_checkpoint(run_dir)
    return record


# ----------------------------------------------------------------------------- the plan


def plan_kills(kills: int, steps: int, every: int, rng: random.Random) -> list[tuple[str, int]]:
    """`kills` (kind, target step) pairs: every kind at least once when there are enough
    kills, random start-up/training kills for the rest, target steps spread over the run,
    the final-save kinds last."""
    finals = list(FINAL[:max(0, min(len(FINAL), kills // 6))])
    n = kills - len(finals)
    special = ["checkpoint-write", "checkpoint-rename", "latest", "log-truncate", "checkpoint-write", "latest"]
    special = special[:max(0, min(len(special), n // 3))]
    kinds = [rng.choice(("startup", "training", "training")) for _ in range(n)]
    # The checkpoint-phase kinds take random places in the first two thirds of the run: a late
    # kill that overshoots (a busy machine) to the last checkpoint turns every kill after it
    # into a kill before metrics.json, and must not take one of them with it.
    for slot, kind in zip(rng.sample(range(max(len(special) + 1, (2 * n) // 3)), len(special)), special):
        kinds[slot] = kind
    if kinds and kinds[0] == "log-truncate":  # the first start has no log to rewrite
        swap = next((i for i, k in enumerate(kinds) if k != "log-truncate"), 0)
        kinds[0], kinds[swap] = kinds[swap], kinds[0]
    # steps 1 .. steps-2: a kill planned for the training always lands before the run ends
    targets = sorted(1 + int((j + rng.random()) * (steps - 2) / max(n, 1)) for j in range(n))
    return list(zip(kinds, targets)) + [(kind, steps) for kind in finals]


# ----------------------------------------------------------------------------- the harness


def run(kills: int = 20, seed: int | None = None, steps: int = 40, checkpoint_every: int = 4,
        eval_every: int = 5, train_seed: int = 0, threads: int = 1, workdir: Path | None = None,
        teacher: Path | None = None, student: Path | None = None, python: str = sys.executable,
        keep: bool = False, say=print) -> dict:
    """Run the harness; return its figures (see the module docstring)."""
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    args = argparse.Namespace(steps=steps, checkpoint_every=checkpoint_every, eval_every=eval_every,
                              train_seed=train_seed)
    began = time.monotonic()
    own_workdir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="optical-kill-")) if own_workdir else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if teacher is None or student is None:
            teacher, student = build_tiny_models(workdir / "models")
        dropout = dropout_of(student)
        if not dropout or min(dropout.values()) <= 0:
            raise SystemExit(f"the student {student} has no dropout ({dropout}); the harness needs it on")
        output = workdir / "processes.log"

        # -- the unbroken run, timed to place the random kills
        unbroken = workdir / "unbroken"
        say(f"unbroken run ({steps} steps) ...")
        t0 = time.monotonic()
        first_step_at = None
        with open(output, "ab") as out:
            process = subprocess.Popen(distill_command(python, teacher, student, unbroken, args, resume=False),
                                       env=child_env(workdir / "cache-unbroken", threads), cwd=ROOT,
                                       stdout=out, stderr=subprocess.STDOUT)
        while process.poll() is None:
            if first_step_at is None and log_state(unbroken)[1] is not None:
                first_step_at = time.monotonic() - t0
            time.sleep(0.01)
        unbroken_s = time.monotonic() - t0
        if process.returncode != 0:
            raise SystemExit(f"the unbroken run failed (exit {process.returncode}); see {output}")
        first_step_at = first_step_at or unbroken_s
        timing = {"startup_s": round(first_step_at, 3), "unbroken_s": round(unbroken_s, 3),
                  "step_s": round(max(unbroken_s - first_step_at, 0.01) / steps, 4)}
        say(f"  {unbroken_s:.1f} s: first step after {first_step_at:.1f} s, ~{timing['step_s']:.3f} s a step")

        # -- the killed run
        broken = workdir / "broken"
        cache = workdir / "cache-broken"
        plan = plan_kills(kills, steps, checkpoint_every, rng)
        launches = []
        for index in range(len(plan)):
            number, (kind, target) = index + 1, plan[index]
            _, start, complete = latest_checkpoint(broken)
            start = start if complete else 0
            if kind == "log-truncate" and not (broken / "log.jsonl").is_file():
                # no log to rewrite yet: take the next training-phase kill now, this one later
                later = next((i for i in range(index + 1, len(plan)) if plan[i][0] not in FINAL + ("log-truncate",)),
                             None)
                if later is None:
                    kind = "startup"
                else:
                    plan[index], plan[later] = (plan[later][0], target), (kind, plan[later][1])
                    kind = plan[index][0]
            if kind not in FINAL and (start or 0) >= steps:
                # (a late kill left the run at its last checkpoint: nothing to train; this start only
                # saves the student) a kill before metrics.json, which always comes
                kind = "before-metrics"
            if kind in ("training", "checkpoint-write", "checkpoint-rename", "latest"):
                target = min(max(target, (start or 0) + 1), steps)
            ckpt = checkpoint_step(target, checkpoint_every, steps) if kind in (
                "checkpoint-write", "checkpoint-rename", "latest") else None
            pause = pause_for(kind, broken, ckpt or steps)
            resume = bool(launches)
            command = distill_command(python, teacher, student, broken, args, resume=resume)
            record = launch(command, child_env(cache, threads, pause), broken, kind, target, timing, rng,
                            output, ckpt, start or 0)
            record.update(launch=number, resumed=resume, resumed_from_step=start if resume else None)
            launches.append(record)
            say(f"  kill {number:2d}/{len(plan)} {kind:17s} "
                + (f"target step {target:3d} " if kind not in FINAL and kind != "startup" else " " * 16)
                + (f"after {record['after_s']:6.2f} s, " if record["killed"] else "NOT KILLED ")
                + f"last logged step {record['last_logged_step']}, latest {record['latest']} "
                + ("(complete)" if record["latest_complete"] else "(INCOMPLETE)" if record["latest_complete"] is False
                   else "")
                + (f", left {', '.join(record['left_on_disk'])}" if record["left_on_disk"] else ""))
            if not record["killed"]:
                break
        final = launch(distill_command(python, teacher, student, broken, args, resume=True),
                       child_env(cache, threads), broken, None, None, timing, rng, output)
        final.update(launch=len(launches) + 1, resumed=True)
        say(f"  final resume: exit {final['returncode']} after {final['wall_s']:.1f} s")

        # -- compare
        comparison = compare(unbroken, broken) if final["returncode"] == 0 else {"identical": False}
        done = [r for r in launches if r["killed"]]
        by_kind = {k: sum(r["kind"] == k for r in done) for k in KINDS}
        result = {
            "harness": "kill_resume",
            "command": "python -m benchmarks.kill_resume " + " ".join(
                [f"--kills {kills}", f"--seed {seed}", f"--steps {steps}", f"--checkpoint-every {checkpoint_every}",
                 f"--eval-every {eval_every}", f"--train-seed {train_seed}", f"--threads {threads}"]),
            "settings": {"kills": kills, "seed": seed, "steps": steps, "checkpoint_every": checkpoint_every,
                         "eval_every": eval_every, "train_seed": train_seed, "threads": threads,
                         "loss": "token_ot:1 + mse:100 (recipe default)", "batch_size": 8, "lr": 5e-4,
                         "student_dropout": dropout},
            "machine": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpu_count": os.cpu_count(),
                        "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
            "timing": timing,
            "kills_planned": len(plan),
            "kills_done": len(done),
            "resumes": sum(r["resumed"] for r in launches + [final]),
            "kills_by_kind": by_kind,
            "kills_paused_by_hook": sum(bool(r.get("paused_by_hook")) for r in done),
            "polled_moments_missed": sum(r["kind"] in POLLED and not r["moment_hit"] for r in done),
            "kills_inside_checkpoint_write": sum(any(x.startswith("checkpoints/.step-") for x in r["left_on_disk"])
                                                 for r in done),
            "kills_inside_final_save": sum(any(x.startswith((".student.", ".student-")) for x in r["left_on_disk"])
                                           for r in done),
            "latest_always_complete": all(r["latest_complete"] is not False for r in launches + [final]),
            "final_exit_code": final["returncode"],
            "launches": launches + [final],
            "comparison": comparison,
            "identical": bool(comparison.get("identical")) and len(done) == len(plan),
            "wall_s": round(time.monotonic() - began, 1),
        }
        say(summary(result))
        return result
    finally:
        if own_workdir and not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def compare(unbroken: Path, broken: Path) -> dict:
    """The killed run against the unbroken one. The verdict covers the log records, every
    weight file (`*.safetensors`: student, head, optimizer state), every trainer_state.json
    (step, scheduler, RNG states, loss), the list of files, the other files (configs,
    tokenizer files, model cards) and metrics.json without its timing."""
    a_log, b_log = log_records(unbroken), log_records(broken)
    files = {}
    for sub in ("student", "checkpoints"):
        a, b = file_hashes(unbroken / sub, unbroken), file_hashes(broken / sub, broken)
        differ = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
        files[sub] = {"files": len(a), "weight_files": sum(k.endswith(".safetensors") for k in a),
                      "trainer_states": sum(k.endswith("trainer_state.json") for k in a),
                      "only_in_one_run": sorted(a.keys() ^ b.keys()),
                      "weights_differ": [k for k in differ if k.endswith(".safetensors")],
                      "trainer_states_differ": [k for k in differ if k.endswith("trainer_state.json")],
                      "other_files_differ": [k for k in differ
                                             if not k.endswith((".safetensors", "trainer_state.json"))]}
    metrics = [json.loads((run / "metrics.json").read_text(encoding="utf-8")) for run in (unbroken, broken)]
    for m in metrics:
        m.pop("seconds", None)
    log_identical = a_log == b_log
    weights = not any(f["weights_differ"] for f in files.values())
    states = not any(f["trainer_states_differ"] for f in files.values())
    same_files = not any(f["only_in_one_run"] for f in files.values())
    other_files = files["student"]["other_files_differ"] + ["checkpoints/" + k for k in files["checkpoints"]["other_files_differ"]]
    metrics_differ = sorted(k for k in metrics[0].keys() | metrics[1].keys() if metrics[0].get(k) != metrics[1].get(k))
    return {
        "log_records": len(a_log), "log_records_killed_run": len(b_log),
        "logged_losses": sum("loss" in r for r in a_log),
        "log_identical": log_identical,
        "log_first_difference": next((i for i, (x, y) in enumerate(zip(a_log, b_log)) if x != y),
                                     None if len(a_log) == len(b_log) else min(len(a_log), len(b_log))),
        "student": files["student"], "checkpoints": files["checkpoints"],
        "weights_identical": weights, "trainer_states_identical": states, "same_files": same_files,
        "other_files_differ": other_files,
        "metrics_json_differ": metrics_differ,  # without `seconds`
        "identical": log_identical and weights and states and same_files and not other_files and not metrics_differ,
    }


def summary(result: dict) -> str:
    c = result["comparison"]
    kinds = ", ".join(f"{k} {n}" for k, n in result["kills_by_kind"].items() if n)
    lines = [
        f"kills: {result['kills_done']} of {result['kills_planned']} planned ({kinds}); "
        f"{result['kills_paused_by_hook']} at a hook pause, {result['kills_inside_checkpoint_write']} left a "
        f"half-written checkpoint, {result['kills_inside_final_save']} a half-written final student; "
        f"polled moments missed: {result['polled_moments_missed']}",
        f"resumes: {result['resumes']}; `latest` always named a complete checkpoint: "
        f"{'yes' if result['latest_always_complete'] else 'NO'}",
    ]
    if "log_records" in c:
        lines += [
            f"log.jsonl: {c['log_records']} records ({c['logged_losses']} step losses), identical: "
            f"{'yes' if c['log_identical'] else 'NO (first difference at record %s)' % c['log_first_difference']}",
            f"weight files: {c['student']['weight_files']} in student/, {c['checkpoints']['weight_files']} in "
            f"checkpoints/, identical: {'yes' if c['weights_identical'] else 'NO'}; trainer states "
            f"({c['checkpoints']['trainer_states']}) identical: {'yes' if c['trainer_states_identical'] else 'NO'}; "
            f"same files: {'yes' if c['same_files'] else 'NO'}",
            f"other files that differ (not weights): {', '.join(c['other_files_differ']) or 'none'}",
            f"metrics.json (without seconds) differs in: {', '.join(c['metrics_json_differ']) or 'nothing'}",
        ]
    lines.append(f"bit-identical to the unbroken run: {'yes' if result['identical'] else 'NO'}; "
                 f"wall time {result['wall_s']:.0f} s (seed {result['settings']['seed']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of the training process (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill plan and moments (default: random, "
                                                               "printed)")
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    parser.add_argument("--checkpoint-every", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--train-seed", type=int, default=0, help="train.seed of both runs")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads of the training processes")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temporary folder, "
                                                                   "removed)")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher folder (default: build the tiny one)")
    parser.add_argument("--student", type=Path, default=None, help="student folder (default: build the tiny one)")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.steps < 4 or args.checkpoint_every < 1:
        parser.error("--kills must be >= 1, --steps >= 4, --checkpoint-every >= 1")
    result = run(args.kills, args.seed, args.steps, args.checkpoint_every, args.eval_every, args.train_seed,
                 args.threads, args.workdir, args.teacher, args.student)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
