"""Distillation end to end through the CLI on tiny models: every teacher kind, resume,
NaN handling, checkpoints, and one-line errors for bad input."""

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from typer.testing import CliRunner

from optical.cli import app
from optical.errors import OpticalError
from optical.recipe import recipe_from_dict
from optical.training.loop import distill

runner = CliRunner()
FAST = ["--set", "train.batch_size=8", "--set", "train.lr=5e-4", "--set", "bitext.heldout=8",
        "--set", "train.eval_every=5", "--set", "train.warmup_ratio=0", "--quiet"]


def run_cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def losses(run_dir):
    return [r["loss"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.fixture()
def teachers(tiny_teacher_st, tiny_clip, tiny_cross_encoder, tiny_hf_teacher):
    return {"sentence-transformers": tiny_teacher_st, "clip": tiny_clip,
            "cross-encoder": tiny_cross_encoder, "hf": tiny_hf_teacher}


@pytest.mark.parametrize("kind", ["sentence-transformers", "clip", "cross-encoder", "hf"])
def test_distill_cli_each_teacher_kind(tmp_path, teachers, tiny_student, bitext_tsv, kind):
    out = tmp_path / "run"
    result = run_cli("distill", "--teacher", kind, "--teacher-model", teachers[kind], "--lang", "vi",
                     "--bitext", bitext_tsv, "--student", tiny_student, "--out", out, "--steps", 30,
                     "--set", "warm_start.method=none", *FAST)
    assert result.exit_code == 0, result.output
    values = losses(out)
    assert len(values) == 30
    assert np.mean(values[-5:]) < np.mean(values[:5])  # it learns
    student = SentenceTransformer(str(out / "student"), trust_remote_code=True)  # layers: all
    dim = 16 if kind == "clip" else 32
    assert student.encode(["Con mèo ngủ"]).shape == (1, dim)  # lands in the teacher's space
    assert (out / "recipe.yaml").is_file() and json.loads((out / "metrics.json").read_text())["steps"] == 30


def test_gradients_reach_every_student_parameter(tiny_teacher_st, tiny_student, bitext_tsv, tmp_path):
    """One step of token_ot + mse moves every trainable tensor of the student."""
    from optical.models.student import Student

    recipe = recipe_from_dict({"teacher": {"model": str(tiny_teacher_st)},
                               "bitext": {"path": str(bitext_tsv), "heldout": 0}, "output_dir": str(tmp_path / "r"),
                               "warm_start": {"method": "none"}, "student": {"model": str(tiny_student),
                                                                             "freeze_embeddings": False}},
                              ["train.steps=1", "train.lr=1e-2", "train.warmup_ratio=0", "train.weight_decay=0"])
    before = Student.create(str(tiny_student), 32, layers=recipe.student.layers).state_dict()
    after = Student.load(distill(recipe, show_progress=False).student_dir).state_dict()
    assert before.keys() == after.keys() and len(before) > 30
    # not on the loss path: BERT's pooler (mean pooling is used) and the unused token-type rows
    skip = ("pooler", "position_ids", "token_type_embeddings")
    unchanged = [k for k in before if before[k].dtype.is_floating_point and torch.equal(before[k], after[k])
                 and not any(s in k for s in skip)]
    assert unchanged == []


def test_frozen_word_embeddings_stay_put_and_the_rest_trains(tiny_teacher_st, tiny_student, bitext_tsv, tmp_path):
    from optical.models.student import Student

    recipe = recipe_from_dict({"teacher": {"model": str(tiny_teacher_st)}, "student": {"model": str(tiny_student)},
                               "bitext": {"path": str(bitext_tsv), "heldout": 0}, "output_dir": str(tmp_path / "r"),
                               "warm_start": {"method": "none"}}, ["train.steps=2", "train.lr=1e-2"])
    assert recipe.student.freeze_embeddings  # the default
    before = Student.create(str(tiny_student), 32, layers=recipe.student.layers).state_dict()
    after = Student.load(distill(recipe, show_progress=False).student_dir).state_dict()
    word = [k for k in before if k.endswith("word_embeddings.weight")]
    assert len(word) == 1 and torch.equal(before[word[0]], after[word[0]])
    layer = [k for k in before if "encoder.layer.0.attention.self.query.weight" in k]
    assert layer and not torch.equal(before[layer[0]], after[layer[0]])


def test_warm_start_only_run(tiny_teacher_st, tiny_student, bitext_tsv, tmp_path):
    out = tmp_path / "ws"
    result = run_cli("distill", "--teacher-model", tiny_teacher_st, "--bitext", bitext_tsv, "--student", tiny_student,
                     "--out", out, "--steps", 0, "--set", "bitext.heldout=8", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    ws = metrics["warm_start"]
    assert ws["heldout_cosine_after"] > ws["heldout_cosine_before"]
    assert SentenceTransformer(str(out / "student"), trust_remote_code=True).encode(["xin chào"]).shape == (1, 32)


def test_triton_solver_on_a_cpu_says_it_falls_back_and_trains(tiny_teacher_st, tiny_student, bitext_tsv, tmp_path):
    out = tmp_path / "tri"
    result = run_cli("distill", "--teacher-model", tiny_teacher_st, "--bitext", bitext_tsv, "--student", tiny_student,
                     "--out", out, "--steps", 2, "--set", "bitext.heldout=8", "--set", "ot.solver=triton",
                     "--set", "train.batch_size=4", "--quiet")
    assert result.exit_code == 0, result.output
    assert "ot.solver: triton needs CUDA and triton (no CUDA device); token_ot uses the torch solver" in result.output
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2


def test_token_ot_english_transports_the_english_side_with_its_own_idf(tiny_teacher_st, tiny_student, bitext_tsv,
                                                                          tmp_path, monkeypatch):
    """`english: true` on token_ot: each step solves a second plan for the student's English tokens,
    with IDF masses from the English side's own frequencies."""
    from optical.losses import TokenOTLoss

    calls = []
    transport = TokenOTLoss.transport

    def spy(self, teacher, student, a, b):
        calls.append((student.shape[0], bool(torch.all(b.sum(-1).sub(1).abs() < 1e-5))))
        return transport(self, teacher, student, a, b)

    monkeypatch.setattr(TokenOTLoss, "transport", spy)
    recipe = recipe_from_dict({"teacher": {"model": str(tiny_teacher_st)}, "student": {"model": str(tiny_student)},
                               "bitext": {"path": str(bitext_tsv), "heldout": 0}, "output_dir": str(tmp_path / "en"),
                               "warm_start": {"method": "none"}, "ot": {"masses": "idf"},
                               "loss": [{"name": "token_ot", "english": True}, {"name": "mse", "weight": 10}]},
                              ["train.steps=3", "train.batch_size=4", "train.warmup_ratio=0"])
    result = distill(recipe, show_progress=False)
    assert len(calls) == 6 and all(size == 4 and masses_sum_to_one for size, masses_sum_to_one in calls)
    assert json.loads((result.student_dir.parent / "metrics.json").read_text())["steps"] == 3


class Killed(BaseException):
    """Stands in for SIGKILL (the CLI runner turns KeyboardInterrupt into an exit code)."""


def test_checkpoint_and_resume_continue_the_run(tiny_teacher_st, tiny_student, bitext_tsv, tmp_path, monkeypatch):
    import optical.training.loop as train

    out = tmp_path / "resume"
    common = ["distill", "--teacher-model", tiny_teacher_st, "--bitext", bitext_tsv, "--student", tiny_student,
              "--out", out, "--set", "train.checkpoint_every=4", *FAST]
    real = train.save_checkpoint

    def save_then_die(run_dir, step, *args, **kwargs):  # killed right after the step-4 checkpoint
        real(run_dir, step, *args, **kwargs)
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(train, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            run_cli(*common, "--steps", 8)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000004"
    assert not list((out / "checkpoints").glob(".step-*")), "no half-written checkpoint left behind"
    assert (out / "checkpoints" / "step-000004" / "optimizer.safetensors").is_file()
    second = run_cli(*common, "--steps", 8, "--resume")
    assert second.exit_code == 0, second.output
    steps = [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # resumed after step 4, not from scratch
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-000008"  # the last step too


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tiny_teacher_st, tiny_student, bitext_tsv, tmp_path,
                                                                 monkeypatch):
    import optical.losses.mse as mse

    calls = {"n": 0}
    original = mse.SentenceMSELoss.forward

    def poisoned(self, batch):
        calls["n"] += 1
        value = original(self, batch)
        return value * float("nan") if calls["n"] > 4 else value

    monkeypatch.setattr(mse.SentenceMSELoss, "forward", poisoned)
    out = tmp_path / "nan"
    result = run_cli("distill", "--teacher-model", tiny_teacher_st, "--bitext", bitext_tsv, "--student", tiny_student,
                     "--out", out, "--steps", 10, "--set", "train.checkpoint_every=2", *FAST)
    assert result.exit_code == 2
    assert "loss became nan at step 5" in result.output and "step-000004" in result.output
    assert (out / "checkpoints" / "step-000004" / "student" / "modules.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--bitext", "{tmp}/missing.tsv"], "bitext file not found"),
    (["--bitext", "{tmp}/empty.tsv"], "no usable sentence pairs"),
    (["--recipe", "{tmp}/missing.yaml"], "recipe file not found"),
    (["--bitext", "{tmp}/empty.tsv", "--set", "train.lr=fast"], "train.lr: expected a number"),
    (["--bitext", "{tmp}/empty.tsv", "--teacher", "bert"], "teacher.kind: expected one of"),
    ([], "no bitext"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message):
    (tmp_path / "empty.tsv").write_text("", "utf-8")
    result = run_cli("distill", *[a.format(tmp=tmp_path) for a in args], "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 2
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_bad_line_error_mode(tmp_path, tiny_teacher_st, tiny_student):
    path = tmp_path / "bad.tsv"
    path.write_text("a\tb\nbroken line\n", "utf-8")
    out = tmp_path / "runs" / "bad"
    with pytest.raises(OpticalError, match="bad.tsv:2"):
        distill(recipe_from_dict({"bitext": {"path": str(path), "on_bad_line": "error"}, "output_dir": str(out)}),
                show_progress=False)
    assert not out.exists()  # the write check's folder is not left behind


def test_overlong_sentences_are_truncated_and_counted(tiny_teacher_st, tiny_student, tmp_path):
    path = tmp_path / "long.tsv"
    long_en = " ".join(["the cat sleeps on the warm bed"] * 10)
    long_vi = " ".join(["con mèo ngủ trên giường ấm"] * 10)
    path.write_text("".join(f"{long_en if i % 2 else 'a cat'}\t{long_vi if i % 3 == 0 else 'con mèo'}\n"
                            for i in range(12)), "utf-8")
    recipe = recipe_from_dict({"teacher": {"model": str(tiny_teacher_st), "max_length": 16},
                               "student": {"model": str(tiny_student), "max_length": 16},
                               "bitext": {"path": str(path), "heldout": 0}, "output_dir": str(tmp_path / "r")},
                              ["train.steps=1", "train.batch_size=4"])
    distill(recipe, show_progress=False)
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["truncated"] == {"teacher_en": 6, "student_other": 4}
    assert metrics["student_unknown_tokens"] == 0.0


def test_a_script_the_student_cannot_read_is_measured_and_warned_about(tiny_teacher_st, tiny_student, tmp_path,
                                                                       capsys):
    """Tibetan-script words are all [UNK] to the tiny student's vocabulary (as 46 % of
    Dzongkha tokens are to e5-small's): with student.new_tokens 0, distill reports the share
    and warns, even with --quiet."""
    from transformers import AutoTokenizer

    from optical.models.vocabulary import unknown_token_share

    path = tmp_path / "dz.tsv"
    others = ["con mèo ngủ", "བཀྲ་ཤིས་བདེ་ལེགས con mèo", "ཡིག་ཆ ngủ"] * 4
    path.write_text("".join(f"a cat sleeps\t{other}\n" for other in others), "utf-8")
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in others]
    expected = sum(x.count(tokenizer.unk_token_id) for x in ids) / sum(len(x) for x in ids)
    assert 0.2 < expected < 0.9  # some tokens known, some not: the share is not all-or-nothing
    assert unknown_token_share(tokenizer, others) == pytest.approx(expected)
    # new_tokens 0: the vocabulary as it ships (auto would add tokens: tests/test_vocabulary.py)
    recipe = recipe_from_dict({"lang": "dz", "teacher": {"model": str(tiny_teacher_st)},
                               "student": {"model": str(tiny_student), "new_tokens": 0},
                               "bitext": {"path": str(path), "heldout": 0}, "output_dir": str(tmp_path / "r")},
                              ["train.steps=1", "train.batch_size=4"])
    distill(recipe, show_progress=False)
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["student_unknown_tokens"] == pytest.approx(expected, abs=1e-4) and "vocabulary" not in metrics
    assert f"{100 * expected:.1f} % of the student's dz tokens are its unknown token [UNK]" in capsys.readouterr().out


def test_device_choice(monkeypatch):
    from optical.training.loop import choose_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type in ("cpu", "mps")
    with pytest.raises(OpticalError, match=r"train.device cuda: not available on this machine \(available: cpu"):
        choose_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device("auto").type == "cuda" and choose_device("cpu").type == "cpu"
