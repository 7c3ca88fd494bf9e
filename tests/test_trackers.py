"""Experiment trackers from the recipe (`train.trackers`): checked names, one-line errors for
missing packages, the same numbers with trackers on or off, CSV and TensorBoard contents
equal to log.jsonl, and resume."""

import importlib.util
import json
import typing
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import optical.training.loop as loop
import tiny_models
from optical.cli import app
from optical.errors import OpticalError
from optical.models.student import Student
from optical.recipe import RESUME_FREE, TrackerName, recipe_differences, recipe_from_dict
from optical.training.loop import distill
from optical.training.trackers import CSV_HEADER, PACKAGES, TRACKERS, truncate_csv

runner = CliRunner()
HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


class Killed(BaseException):
    """Stands in for SIGKILL (BaseException: nothing in the loop catches it)."""


def make_recipe(teacher, student, out, *overrides):
    return recipe_from_dict({"teacher": {"model": str(teacher)}, "student": {"model": str(student)},
                             "bitext": {"path": str(tiny_models.BITEXT_VI), "heldout": 8},
                             "output_dir": str(out)},
                            ["train.steps=6", "train.batch_size=8", "train.lr=5e-4", "train.warmup_ratio=0.2",
                             "train.eval_every=3", "train.checkpoint_every=3", *overrides])


def log_records(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


def numbers(run_dir):
    """Every logged number but the timing: step records and held-out checks."""
    return [{k: v for k, v in r.items() if k != "pairs_per_s"} for r in log_records(run_dir)]


def csv_rows(run_dir):
    lines = (Path(run_dir) / "trackers" / "metrics.csv").read_text().splitlines()
    assert lines[0] + "\n" == CSV_HEADER
    return [(int(s), name, float(v)) for s, name, v in (line.split(",") for line in lines[1:])]


def test_tracker_names_are_the_recipe_literal_and_unknown_ones_are_one_line():
    assert set(typing.get_args(TrackerName)) == set(TRACKERS) == {"csv", *PACKAGES}
    assert recipe_from_dict({}).train.trackers == ()
    assert recipe_from_dict({}, ["train.trackers=csv,tensorboard"]).train.trackers == ("csv", "tensorboard")
    with pytest.raises(OpticalError, match=r"^--set train.trackers=\[csv, tensorbord\]: train.trackers.1: "
                                           r"expected one of 'csv', 'tensorboard'"):
        recipe_from_dict({}, ["train.trackers=[csv, tensorbord]"])
    with pytest.raises(OpticalError, match="train.trackers: 'csv' is listed twice"):
        recipe_from_dict({"train": {"trackers": ["csv", "csv"]}})


def test_cli_refuses_an_unknown_tracker_in_one_line(tiny_teacher_st, tiny_student, bitext_tsv, tmp_path):
    result = runner.invoke(app, ["distill", "--teacher-model", str(tiny_teacher_st), "--student", str(tiny_student),
                                 "--bitext", str(bitext_tsv), "--out", str(tmp_path / "r"), "--steps", "1",
                                 "--set", "train.trackers=[wandbb]", "--quiet"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --set train.trackers=[wandbb]: train.trackers.0:")
    assert not (tmp_path / "r").exists()


def test_changing_trackers_does_not_block_resume():
    assert "train.trackers" in RESUME_FREE
    old, new = recipe_from_dict({}), recipe_from_dict({}, ["train.trackers=[csv, tensorboard]"])
    assert recipe_differences(old, new) == []
    assert recipe_differences(old, recipe_from_dict({}, ["train.lr=1e-3"])) != []  # the check still works


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_missing_wandb_is_one_line_before_any_model_loads(tiny_student, bitext_tsv, tmp_path):
    result = runner.invoke(app, ["distill", "--teacher-model", str(tmp_path / "no-teacher-here"),
                                 "--student", str(tiny_student), "--bitext", str(bitext_tsv),
                                 "--out", str(tmp_path / "r"), "--steps", "1", "--set", "train.trackers=[wandb]"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: train.trackers: 'wandb' is not installed: pip install wandb"


def test_missing_tensorboard_is_one_line(tiny_teacher_st, tiny_student, tmp_path, monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(OpticalError, match=r"^train.trackers: 'tensorboard' is not installed: "
                                           r"pip install tensorboard$"):
        distill(make_recipe(tiny_teacher_st, tiny_student, tmp_path / "r", "train.trackers=[csv, tensorboard]"),
                show_progress=False)


def test_a_tracker_that_cannot_start_is_one_line(tiny_teacher_st, tiny_student, tmp_path, monkeypatch):
    from accelerate import Accelerator

    def refuse(self, *args, **kwargs):
        raise RuntimeError("api_key not configured (no-tty)\ncall login() first")

    monkeypatch.setattr(Accelerator, "init_trackers", refuse)
    with pytest.raises(OpticalError, match=r"^train.trackers: csv: could not start \(RuntimeError: "
                                           r"api_key not configured \(no-tty\)\)$"):
        distill(make_recipe(tiny_teacher_st, tiny_student, tmp_path / "r", "train.trackers=[csv]"),
                show_progress=False)


def test_trackers_log_what_log_jsonl_gets_and_change_no_number(tiny_teacher_st, tiny_student, tmp_path):
    """Dropout is on in the tiny student, so any extra RNG draw would change the losses."""
    on = ["csv", "tensorboard"] if HAS_TENSORBOARD else ["csv"]
    plain = distill(make_recipe(tiny_teacher_st, tiny_student, tmp_path / "plain"), show_progress=False)
    tracked = distill(make_recipe(tiny_teacher_st, tiny_student, tmp_path / "tracked",
                                  f"train.trackers=[{', '.join(on)}]"), show_progress=False)
    assert tracked.losses == plain.losses and tracked.heldout == plain.heldout
    assert numbers(tmp_path / "tracked") == numbers(tmp_path / "plain")
    a, b = Student.load(plain.student_dir).state_dict(), Student.load(tracked.student_dir).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "plain" / "trackers").exists()

    rows = csv_rows(tmp_path / "tracked")
    records = log_records(tmp_path / "tracked")
    steps = [r for r in records if "loss" in r]
    for name in ("loss", "token_ot", "mse", "lr"):
        assert [(s, v) for s, n, v in rows if n == name] == [(r["step"], r[name]) for r in steps]
    checks = [r for r in records if "heldout" in r]
    assert [(s, v) for s, n, v in rows if n == "heldout/cosine_to_teacher"] == \
        [(r["step"], r["heldout"]["cosine_to_teacher"]) for r in checks]
    assert [r["step"] for r in checks] == [3, 6, 6]  # two checks and the final one

    if HAS_TENSORBOARD:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tmp_path / "tracked" / "trackers" / "distill"))
        events.Reload()
        assert {"loss", "lr", "heldout/acc_other_to_en"} <= set(events.Tags()["scalars"])
        logged = [(e.step, e.value) for e in events.Scalars("loss")]
        assert [s for s, _ in logged] == [r["step"] for r in steps]
        assert [v for _, v in logged] == pytest.approx([r["loss"] for r in steps], rel=1e-6)


def test_resume_trims_the_csv_and_may_switch_trackers_on(tiny_teacher_st, tiny_student, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = loop.Distiller.train_step

    def die_at_step_5(self, step, *args):
        if step == 5:
            raise Killed(step)
        return real(self, step, *args)

    with monkeypatch.context() as patch:
        patch.setattr(loop.Distiller, "train_step", die_at_step_5)
        with pytest.raises(Killed):
            distill(make_recipe(tiny_teacher_st, tiny_student, out, "train.trackers=[csv]"), show_progress=False)
    assert [s for s, n, _ in csv_rows(out) if n == "loss"] == [1, 2, 3, 4]  # one step past the checkpoint
    on = "[csv, tensorboard]" if HAS_TENSORBOARD else "[csv]"
    resumed = distill(make_recipe(tiny_teacher_st, tiny_student, out, f"train.trackers={on}"), resume=True,
                      show_progress=False)
    assert resumed.steps == 6
    rows = csv_rows(out)
    steps = [r for r in log_records(out) if "loss" in r]
    assert [(s, v) for s, n, v in rows if n == "loss"] == [(r["step"], r["loss"]) for r in steps]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]


def test_truncate_csv_keeps_rows_up_to_the_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(CSV_HEADER + "1,loss,0.5\n2,loss,0.4\n3,loss,0.3\n3,heldout/x,1.0\n")
    truncate_csv(path, 2)
    assert path.read_text() == CSV_HEADER + "1,loss,0.5\n2,loss,0.4\n"
    truncate_csv(tmp_path / "absent.csv", 2)  # nothing to trim
    assert not (tmp_path / "absent.csv").exists()
