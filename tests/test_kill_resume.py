"""Real kill -9: the harness of benchmarks/kill_resume.py (SIGKILLs of `python -m optical
distill`, each followed by `--resume`) must end bit-identical to an unbroken run. The slow
test runs it with 20 kills; the quick ones check its plan and its pause hook."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:  # `benchmarks` is not installed; appended, so `optical` resolves as before
    sys.path.append(REPO)

from benchmarks import kill_resume  # noqa: E402


@pytest.mark.parametrize("seed", range(5))
def test_kill_plan_covers_every_moment(seed):
    plan = kill_resume.plan_kills(20, 40, 4, random.Random(seed))
    kinds = [kind for kind, _ in plan]
    assert len(plan) == 20 and set(kinds) == set(kill_resume.KINDS)
    assert kinds[-3:] == list(kill_resume.FINAL) and not set(kinds[:-3]) & set(kill_resume.FINAL)
    assert kinds[0] != "log-truncate"  # the first start has no log to rewrite
    targets = [target for _, target in plan[:-3]]
    assert targets == sorted(targets) and 1 <= targets[0] and targets[-1] <= 38


def test_pause_hook_stops_right_before_the_chosen_replace(tmp_path):
    """The hook stops the process before the 2nd replace onto `b*` whose source holds 'x';
    the one before it has happened, that one and the next have not."""
    for name in ("a1", "a2", "a3"):
        (tmp_path / name).write_text("x" if name != "a2" else "y")
    script = ("import os, sys; d = sys.argv[1]; "
              "[os.replace(os.path.join(d, s), os.path.join(d, t)) for s, t in (('a1', 'b1'), ('a2', 'b2'), "
              "('a3', 'b3'))]")
    pause = {"dst": r"/b\d$", "src_text": "x", "nth": 2}
    env = kill_resume.child_env(tmp_path / "cache", 1, pause)
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env)
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["a3", "b1", "b2"]
    os.kill(process.pid, signal.SIGKILL)
    _, status = os.waitpid(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "b3").exists()


def test_without_the_pause_variable_the_hook_does_nothing(tmp_path):
    (tmp_path / "a").write_text("x")
    env = kill_resume.child_env(tmp_path / "cache", 1, None)
    env["PYTHONPATH"] = os.pathsep.join([str(kill_resume.HOOK_DIR), env["PYTHONPATH"]])
    subprocess.run([sys.executable, "-c", "import os, sys; os.replace(sys.argv[1] + '/a', sys.argv[1] + '/b')",
                    str(tmp_path)], env=env, check=True, timeout=60)
    assert (tmp_path / "b").read_text() == "x"


@pytest.mark.slow
def test_twenty_kills_and_resumes_end_bit_identical(tiny_teacher_st, tiny_student, tmp_path):
    """20 SIGKILLs at planned and random moments (start-up, training steps, inside checkpoint
    writes, between a checkpoint folder and `latest`, during the final save), each followed by
    `--resume`: every logged loss and every weight file equal the unbroken run's, bit for bit."""
    result = kill_resume.run(kills=20, steps=40, checkpoint_every=4, teacher=tiny_teacher_st,
                             student=tiny_student, workdir=tmp_path)
    (tmp_path / "kill_resume.json").write_text(json.dumps(result, indent=2))
    report = kill_resume.summary(result)
    assert min(result["settings"]["student_dropout"].values()) > 0, report
    assert result["kills_done"] == result["kills_planned"] == 20, report
    assert result["resumes"] == 20 and result["final_exit_code"] == 0, report
    assert all(result["kills_by_kind"][kind] >= 1 for kind in kill_resume.KINDS), report
    assert result["kills_paused_by_hook"] == sum(result["kills_by_kind"][k] for k in kill_resume.PAUSED), report
    assert result["latest_always_complete"], report
    comparison = result["comparison"]
    assert comparison["logged_losses"] == 40, report
    assert comparison["log_identical"], report
    assert comparison["weights_identical"] and comparison["student"]["weight_files"] >= 2, report
    assert comparison["trainer_states_identical"] and comparison["same_files"], report
    assert result["identical"], report
