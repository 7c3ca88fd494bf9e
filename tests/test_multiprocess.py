"""Two CPU processes through `accelerate launch` (torchrun + gloo), the same command that runs
on many GPUs: both ranks must end with identical weights, equal to the saved student."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from optical.models.student import Student

from multiprocess_entry import weights_digest

REPO = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_python_dash_m_optical_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "optical", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0 and "distill" in result.stdout


@pytest.mark.slow
def test_two_processes_end_with_identical_weights(tmp_path, tiny_teacher_st, tiny_student, bitext_tsv, monkeypatch):
    hashes, out = tmp_path / "hashes", tmp_path / "run"
    env = {**os.environ, "RANK_HASH_DIR": str(hashes), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           # two CPU processes even where one GPU is visible (accelerate would give rank 1 cuda:1)
           "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # --multi_gpu makes accelerate start torchrun; without CUDA, optical's Accelerator(cpu=True)
    # joins the process group over gloo (accelerate's --cpu would start a single process).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()),
               str(Path(__file__).parent / "multiprocess_entry.py"), f"teacher.model={tiny_teacher_st}",
               f"student.model={tiny_student}", f"bitext.path={bitext_tsv}", f"output_dir={out}", "train.steps=4",
               "train.batch_size=4", "train.grad_accum=2", "train.lr=1e-3", "train.warmup_ratio=0",
               "bitext.heldout=8", "train.checkpoint_every=2", "train.device=cpu"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (hashes / f"weights_rank{i}.sha256" for i in (0, 1))
    assert rank0.is_file() and rank1.is_file()  # two processes really ran
    assert rank0.read_text() == rank1.read_text()
    # the saved student is rank 0's final model, and training moved it
    assert weights_digest(Student.load(out / "student")) + "\n" == rank0.read_text()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert (out / "checkpoints").is_dir()
