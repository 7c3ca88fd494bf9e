"""Checkpoints and resume on tiny models: dropout stays on, exact resume (RNG states), no
non-finite weights on disk, atomic writes, one run per folder, refused recipe changes."""

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import optical.run_dir as run_dir
import optical.training.loop as train
import tiny_models
from tiny_models import one_error_line
from optical.training.checkpoint import first_non_finite, remove_leftovers, save_student
from optical.cli import app
from optical.errors import OpticalError
from optical.models.student import Student
from optical.recipe import recipe_from_dict
from optical.training.loop import distill

runner = CliRunner()


class Killed(BaseException):
    """Stands in for SIGKILL right after a checkpoint (BaseException: nothing catches it)."""


def make_recipe(teacher, student, out, *overrides):
    return recipe_from_dict({"teacher": {"model": str(teacher)}, "student": {"model": str(student)},
                             "bitext": {"path": str(tiny_models.BITEXT_VI), "heldout": 8},
                             "output_dir": str(out)},
                            ["train.batch_size=8", "train.lr=5e-4", "train.warmup_ratio=0", "train.eval_every=2",
                             *overrides])


def weights(folder):
    return Student.load(folder).state_dict()


def log_records(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


def step_losses(run_dir):
    """Every logged step record without its timing: (step, loss, parts, lr)."""
    return [{k: v for k, v in r.items() if k != "pairs_per_s"} for r in log_records(run_dir) if "loss" in r]


def kill_after_checkpoint(monkeypatch, step):
    real = train.save_checkpoint

    def save_then_die(run_dir, at, *args, **kwargs):
        path = real(run_dir, at, *args, **kwargs)
        if at == step:
            raise Killed(path)
        return path

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)


def test_tiny_student_has_dropout(tiny_student):
    config = json.loads((tiny_student / "config.json").read_text())
    assert config["hidden_dropout_prob"] > 0 and config["attention_probs_dropout_prob"] > 0


# ----------------------------------------------------------------------------- 1. dropout


def test_every_training_step_runs_in_train_mode(tiny_teacher_st, tiny_student, tmp_path, monkeypatch):
    """A checkpoint (sentence-transformers' save calls .eval()) must not switch dropout off."""
    seen = []
    forward = Student.forward

    def recording(self, features):
        if torch.is_grad_enabled():  # a training forward, not the held-out scoring
            seen.append(all(m.training for m in self.modules()))
        return forward(self, features)

    monkeypatch.setattr(Student, "forward", recording)
    distill(make_recipe(tiny_teacher_st, tiny_student, tmp_path / "r", "train.steps=4",
                        "train.checkpoint_every=1", "warm_start.method=none"), show_progress=False)
    assert len(seen) >= 4 and all(seen)  # mse also encodes the English side: two forwards a step


def test_checkpoints_do_not_change_the_numbers(tiny_teacher_st, tiny_student, tmp_path):
    """With and without checkpoints (and held-out scoring): bit-identical losses and weights."""
    plain = distill(make_recipe(tiny_teacher_st, tiny_student, tmp_path / "a", "train.steps=5",
                                "train.checkpoint_every=0", "train.eval_every=0"), show_progress=False)
    saved = distill(make_recipe(tiny_teacher_st, tiny_student, tmp_path / "b", "train.steps=5",
                                "train.checkpoint_every=2"), show_progress=False)
    assert plain.losses == saved.losses
    a, b = weights(plain.student_dir), weights(saved.student_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- 2. non-finite weights


def test_diverging_run_never_writes_non_finite_weights(tiny_teacher_st, tiny_student, tmp_path):
    out = tmp_path / "r"
    recipe = make_recipe(tiny_teacher_st, tiny_student, out, "train.steps=12", "train.checkpoint_every=1",
                         "train.lr=1e6", "train.warmup_ratio=0.1")  # loss finite one step after NaN weights
    with pytest.raises(OpticalError) as err:
        distill(recipe, show_progress=False)
    message = str(err.value)
    assert "\n" not in message and "Last good checkpoint" in message
    written = sorted((out / "checkpoints").glob("step-*")) if (out / "checkpoints").is_dir() else []
    for folder in written:
        assert first_non_finite(Student.load(folder / "student")) is None, folder
    named = message.split("Last good checkpoint: ")[1].split(". ")[0]
    if written:
        assert named == str(written[-1]) and (out / "checkpoints" / "latest").read_text().strip() == written[-1].name
    else:
        assert named == "none written yet"
    assert not (out / "student").exists()


def test_nan_loss_weight_is_refused_by_the_recipe():
    for overrides in (["loss=token_ot:nan"], ["loss=mse:inf"], ["train.lr=.nan"], ["ot.epsilon=.inf"]):
        with pytest.raises(OpticalError, match="expected a finite number"):
            recipe_from_dict({}, overrides)
    with pytest.raises(OpticalError, match="loss.0.weight: expected a finite number"):
        recipe_from_dict({"loss": [{"name": "mse", "weight": float("nan")}]})


# ----------------------------------------------------------------------------- 3. exact resume


def test_resume_after_a_kill_is_bit_identical_with_dropout(tiny_teacher_st, tiny_student, tmp_path, monkeypatch):
    unbroken = distill(make_recipe(tiny_teacher_st, tiny_student, tmp_path / "a", "train.steps=6",
                                   "train.checkpoint_every=3"), show_progress=False)

    broken = make_recipe(tiny_teacher_st, tiny_student, tmp_path / "b", "train.steps=6", "train.checkpoint_every=3")
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, 3)
        with pytest.raises(Killed):
            distill(broken, show_progress=False)
    state = json.loads((tmp_path / "b" / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert set(state["rng"]) >= {"torch", "python", "numpy"}
    resumed = distill(broken, resume=True, show_progress=False)

    assert step_losses(tmp_path / "b") == step_losses(tmp_path / "a")
    assert [r["step"] for r in step_losses(tmp_path / "b")] == [1, 2, 3, 4, 5, 6]
    a, b = weights(unbroken.student_dir), weights(resumed.student_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the summary covers the whole run, warm start and the killed process's steps included
    summary = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("a", "b")]
    for s in summary:
        s.pop("seconds")
    assert summary[0] == summary[1] and summary[1]["warm_start"] is not None
    assert resumed.losses == unbroken.losses and len(resumed.losses) == 6

    # Without the RNG states the dropout masks after the resume differ: dropout is in effect.
    again = make_recipe(tiny_teacher_st, tiny_student, tmp_path / "c", "train.steps=6", "train.checkpoint_every=3")
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, 3)
        with pytest.raises(Killed):
            distill(again, show_progress=False)
    monkeypatch.setattr(train, "restore_rng_state", lambda state: None)
    distill(again, resume=True, show_progress=False)
    assert step_losses(tmp_path / "c")[:3] == step_losses(tmp_path / "a")[:3]
    assert step_losses(tmp_path / "c")[3:] != step_losses(tmp_path / "a")[3:]


# ----------------------------------------------------------------------------- 4. atomic writes


class HalfWriter:
    """A student whose save writes part of the folder, then dies."""

    def save(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "modules.json").write_text("[]")
        raise Killed("disk pulled")


def test_student_save_is_atomic(tmp_path):
    target = tmp_path / "run" / "student"
    with pytest.raises(Killed):
        save_student(HalfWriter(), target)
    assert not target.exists() and list((tmp_path / "run").iterdir()) == []
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"old")
    with pytest.raises(Killed):
        save_student(HalfWriter(), target)
    assert (target / "model.safetensors").read_bytes() == b"old"


def test_leftovers_of_killed_writes_are_removed_on_start(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / ".step-000004.abc.tmp" / "student").mkdir(parents=True)
    (run / ".student.xyz.tmp").mkdir()
    (run / "checkpoints" / ".latest.k2j.tmp").write_text("step-000004")
    (run / ".metrics.json.a1.tmp").write_text("{")
    (run / "checkpoints" / "latest").write_text("step-000002\n")
    (run / "notes.txt").write_text("mine")
    removed = remove_leftovers(run)
    assert len(removed) == 4
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoints", "latest", "notes.txt"]


# ----------------------------------------------------------------------------- 5. one run per folder


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def distill_args(teacher, student, out, *extra):
    return ["distill", "--teacher-model", teacher, "--bitext", tiny_models.BITEXT_VI, "--student", student,
            "--out", out, "--steps", 5, "--set", "train.batch_size=8", "--set", "bitext.heldout=8",
            "--set", "train.checkpoint_every=3", "--quiet", *extra]


def test_finished_run_checkpoints_its_last_step_and_resume_does_nothing(tiny_teacher_st, tiny_student, tmp_path):
    out = tmp_path / "run"
    out.mkdir()  # an existing, empty folder is fine
    first = cli(*distill_args(tiny_teacher_st, tiny_student, out))
    assert first.exit_code == 0, first.output
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000005"
    log, weights_file = (out / "log.jsonl").read_bytes(), (out / "student" / "model.safetensors")
    stamp = weights_file.stat().st_mtime_ns

    again = cli(*distill_args(tiny_teacher_st, tiny_student, out, "--resume", "--set", "train.eval_every=1"))
    assert again.exit_code == 0, again.output
    assert "already finished" in again.output
    assert (out / "log.jsonl").read_bytes() == log and weights_file.stat().st_mtime_ns == stamp

    refused = cli(*distill_args(tiny_teacher_st, tiny_student, out))
    one_error_line(refused, str(out), "--resume", "--out")
    assert (out / "log.jsonl").read_bytes() == log


@pytest.mark.parametrize("change, key", [
    (["--set", "train.lr=1e-3"], "train.lr"),
    (["--steps", 6], "train.steps"),
    (["--set", "train.batch_size=4"], "train.batch_size"),
    (["--loss", "mse:1"], "loss"),
    (["--student", "STUDENT2"], "student.model"),
    (["--teacher-model", "TEACHER2"], "teacher.model"),
    (["--bitext", "BITEXT2"], "bitext.path"),
])
def test_resume_with_a_different_recipe_is_refused(tiny_teacher_st, tiny_student, tmp_path, change, key):
    out = tmp_path / "run"
    out.mkdir()
    # a run's saved recipe is all the check reads: write it as distill would
    recipe = recipe_from_dict({}, [f"teacher.model={tiny_teacher_st}", f"student.model={tiny_student}",
                                   f"bitext.path={tiny_models.BITEXT_VI}", f"output_dir={out}", "train.steps=5",
                                   "train.batch_size=8", "bitext.heldout=8", "train.checkpoint_every=3"])
    (out / "recipe.yaml").write_text(recipe.to_yaml())
    swap = {"STUDENT2": tmp_path / "other-student", "TEACHER2": tmp_path / "other-teacher",
            "BITEXT2": tmp_path / "other.tsv"}
    change = [swap.get(c, c) if isinstance(c, str) else c for c in change]
    args = distill_args(tiny_teacher_st, tiny_student, out, "--resume")
    for flag, value in zip(change[::2], change[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    one_error_line(cli(*args), f"--resume: {key}", str(out / "recipe.yaml"))


def test_resume_continues_a_killed_run_without_duplicate_log_lines(tiny_teacher_st, tiny_student, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "run"
    log = train.append_log

    def log_then_die(path, record):  # killed after logging step 4, one step past the checkpoint
        log(path, record)
        if record.get("step") == 4 and "heldout" in record:
            raise Killed(record)

    with monkeypatch.context() as patch:
        patch.setattr(train, "append_log", log_then_die)
        with pytest.raises(Killed):
            cli(*distill_args(tiny_teacher_st, tiny_student, out, "--set", "train.eval_every=1"))
    assert [r["step"] for r in log_records(out) if "loss" in r] == [1, 2, 3, 4]
    assert not (out / "metrics.json").exists()
    resumed = cli(*distill_args(tiny_teacher_st, tiny_student, out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    records = log_records(out)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5]
    assert sum(1 for r in records if r.get("final")) == 1
    assert math.isfinite(json.loads((out / "metrics.json").read_text())["final_loss"])


# ----------------------------------------------------------------------------- 6. --overwrite, --resume-changed


def test_overwrite_replaces_only_the_runs_own_files(tiny_teacher_st, tiny_student, tmp_path):
    out = tmp_path / "run"
    assert cli(*distill_args(tiny_teacher_st, tiny_student, out)).exit_code == 0
    (out / "notes.txt").write_text("mine")
    (out / "eval-beir").mkdir()
    (out / "eval-beir" / "old.json").write_text("{}")
    one_error_line(cli(*distill_args(tiny_teacher_st, tiny_student, out)), str(out), "--overwrite")

    again = cli(*distill_args(tiny_teacher_st, tiny_student, out, "--overwrite"))
    assert again.exit_code == 0, again.output
    assert "--overwrite: removed" in again.output
    assert (out / "notes.txt").read_text() == "mine" and not (out / "eval-beir").exists()
    assert [r["step"] for r in log_records(out) if "loss" in r] == [1, 2, 3, 4, 5]  # the old log is gone
    assert sum(1 for r in log_records(out) if r.get("final")) == 1
    one_error_line(cli(*distill_args(tiny_teacher_st, tiny_student, out, "--overwrite", "--resume")),
                   "--overwrite and --resume")


def test_library_overwrite_and_clear_run_dir(tmp_path):
    out = tmp_path / "run"
    for name in ("student", "checkpoints", "eval-x"):
        (out / name).mkdir(parents=True)
    for name in ("recipe.yaml", "log.jsonl", "metrics.json", "keep.txt"):
        (out / name).write_text("x")
    (tmp_path / "outside").mkdir()
    (out / "evalink").symlink_to(tmp_path / "outside")  # a link is removed, its target kept
    removed = run_dir.clear_run_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and len(removed) == 7
    assert (tmp_path / "outside").is_dir()
    recipe = recipe_from_dict({}, [f"output_dir={out}"])
    (out / "recipe.yaml").write_text(recipe.to_yaml())
    with pytest.raises(OpticalError, match="already holds a run"):
        run_dir.check_run_dir(out, recipe, resume=False)
    assert run_dir.check_run_dir(out, recipe, resume=False, overwrite=True) is False


def test_resume_changed_continues_and_prints_the_changes(tiny_teacher_st, tiny_student, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, 3)
        with pytest.raises(Killed):
            cli(*distill_args(tiny_teacher_st, tiny_student, out))
    changed = distill_args(tiny_teacher_st, tiny_student, out, "--resume", "--set", "train.lr=1e-3")
    one_error_line(cli(*changed), "--resume: train.lr", "--resume-changed")
    resumed = cli(*changed, "--resume-changed")
    assert resumed.exit_code == 0, resumed.output
    assert "--resume-changed: train.lr: 2e-05 -> 0.001" in resumed.output
    assert [r["step"] for r in log_records(out) if "loss" in r] == [1, 2, 3, 4, 5]
    one_error_line(cli(*distill_args(tiny_teacher_st, tiny_student, tmp_path / "new", "--resume-changed")),
                   "--resume-changed needs --resume")


def test_duplicated_bitext_warns_even_when_quiet(tiny_teacher_st, tiny_student, tmp_path):
    pairs = Path(tiny_models.BITEXT_VI).read_text(encoding="utf-8").splitlines()
    bitext = tmp_path / "dup.tsv"
    bitext.write_text("\n".join(pairs[:20] + pairs[:20] * 2) + "\n", encoding="utf-8")
    args = distill_args(tiny_teacher_st, tiny_student, tmp_path / "run")
    args[args.index("--bitext") + 1] = bitext
    result = cli(*args, "--steps", 1)
    assert result.exit_code == 0, result.output
    assert "warning: 40 of 60 pairs are duplicates" in result.output


def test_unwritable_out_fails_before_any_model_loads(tiny_teacher_st, tiny_student, tmp_path, monkeypatch):
    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the output folder was checked")

    monkeypatch.setattr(train, "load_teacher", no_models)
    monkeypatch.setattr(train.Student, "from_pretrained", no_models, raising=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where a folder should be: fails even as root, unlike chmod
    one_error_line(cli(*distill_args(tiny_teacher_st, tiny_student, blocker / "run")), "cannot write", str(blocker))


# ----------------------------------------------------------------------------- 7. file modes follow the umask


def pooled_student_states_cached(path):
    """Write the warm start's cache file the way warm_start does (states computed by a stub)."""
    import optical.training.warm_start as ws

    real = ws.pooled_student_states
    ws.pooled_student_states = lambda *args, **kwargs: torch.zeros(2, 3)
    try:
        ws._pooled_pairs(None, [("a", "b")], 2, "cpu", False, path)
    finally:
        ws.pooled_student_states = real


class FileWriter:
    """A student whose save writes one plain file."""

    def save(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "modules.json").write_text("[]")


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    import os
    import stat

    from optical.training.checkpoint import atomic_write_text, save_checkpoint
    from optical.training.teacher_store import TeacherStore

    def mode(path):
        return stat.S_IMODE(os.stat(path).st_mode)

    old = os.umask(umask)
    try:
        param = torch.nn.Parameter(torch.ones(2))
        optimizer = torch.optim.AdamW([param])
        param.grad = torch.ones(2)
        optimizer.step()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        checkpoint = save_checkpoint(tmp_path / "run", 1, FileWriter(), optimizer, scheduler, {})
        student = save_student(FileWriter(), tmp_path / "run" / "student")
        atomic_write_text(tmp_path / "run" / "metrics.json", "{}")
        store = tmp_path / "cache" / "teacher.safetensors"
        TeacherStore(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.tensor([0, 1]),
                     torch.zeros(1, 2)).save(store)
        warm = tmp_path / "cache" / "warm.safetensors"
        pooled_student_states_cached(warm)
    finally:
        os.umask(old)
    assert mode(checkpoint) == dir_mode and mode(student) == dir_mode
    for path in (checkpoint.parent / "latest", checkpoint / "trainer_state.json", checkpoint / "optimizer.safetensors",
                 tmp_path / "run" / "metrics.json", store, warm):
        assert mode(path) == file_mode, path


@pytest.mark.parametrize("layers", [("student.layers=all",),
                                    ("student.layers=last", "warm_start.refit_layers=all")], ids=["all", "refit-all"])
@pytest.mark.parametrize("kill_at", [3, 6])
def test_multi_layer_student_with_refit_resumes_bit_identical(tiny_teacher_st, tiny_student, tmp_path, monkeypatch,
                                                              kill_at, layers):
    """student.layers=all + warm_start.refit (or a last-layer student refitted on every layer):
    a kill mid-run (3) or after the last checkpoint, before the refit (6), resumes to the
    unbroken run's weights and metrics."""
    extra = ("train.steps=6", "train.checkpoint_every=3", "warm_start.refit=true", *layers)
    unbroken = distill(make_recipe(tiny_teacher_st, tiny_student, tmp_path / "a", *extra), show_progress=False)
    broken = make_recipe(tiny_teacher_st, tiny_student, tmp_path / "b", *extra)
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, kill_at)
        with pytest.raises(Killed):
            distill(broken, show_progress=False)
    resumed = distill(broken, resume=True, show_progress=False)
    a, b = weights(unbroken.student_dir), weights(resumed.student_dir)
    assert Student.load(resumed.student_dir).layers is not None
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summary = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("a", "b")]
    for s in summary:
        s.pop("seconds")
    assert summary[0] == summary[1] and summary[1]["refit"]["pairs"] > 0


def test_warm_start_report_survives_a_kill_before_the_first_checkpoint(tiny_teacher_st, tiny_student, tmp_path,
                                                                       monkeypatch):
    """Killed during set-up (no checkpoint, nothing logged), restarted with --resume (so it
    starts over and fits the warm start itself), killed after a checkpoint, resumed: the
    warm-start report still reaches metrics.json, as in an unbroken run."""
    extra = ("train.steps=6", "train.checkpoint_every=3")
    unbroken = distill(make_recipe(tiny_teacher_st, tiny_student, tmp_path / "a", *extra), show_progress=False)
    broken = make_recipe(tiny_teacher_st, tiny_student, tmp_path / "b", *extra)
    with monkeypatch.context() as patch:
        def die(self):
            raise Killed("set-up")
        patch.setattr(train.Distiller, "setup_objective", die)
        with pytest.raises(Killed):
            distill(broken, show_progress=False)
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, 3)
        with pytest.raises(Killed):
            distill(broken, resume=True, show_progress=False)
    distill(broken, resume=True, show_progress=False)
    summary = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("a", "b")]
    for s in summary:
        s.pop("seconds")
    assert summary[1]["warm_start"] is not None and summary[0] == summary[1]
    assert step_losses(tmp_path / "b") == step_losses(tmp_path / "a")
    assert unbroken.warm_start == summary[1]["warm_start"]
