"""Atomic checkpoints: student (safetensors), optimizer state (safetensors), trainer state (JSON).

Layout of `<run>/checkpoints/step-000100/`:
  student/                 a sentence-transformers folder
  optimizer.safetensors    every optimizer state tensor, keyed `<param index>.<name>`
  trainer_state.json       step, scheduler, optimizer hyper-parameters, RNG seeds, metrics
A checkpoint is written into a temporary folder and renamed into place, and `latest`
(a one-line file) is replaced atomically after it, so a crash at any moment leaves the
previous checkpoint intact and `latest` pointing at a complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into flat tensors (for safetensors) and JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run_dir: Path, step: int, student, optimizer, scheduler, extra: dict, keep: int = 2) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}-"))
    try:
        student.save(tmp / "student")
        tensors, meta = optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        state = {"step": step, "optimizer": meta, "scheduler": scheduler.state_dict(),
                 "torch_rng": torch.get_rng_state().tolist(), **extra}
        (tmp / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(root / "latest", final.name + "\n")
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    marker = Path(run_dir) / "checkpoints" / "latest"
    if not marker.is_file():
        return None
    path = marker.parent / marker.read_text(encoding="utf-8").strip()
    return path if (path / "trainer_state.json").is_file() else None


def load_trainer_state(checkpoint: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    return state, load_file(str(checkpoint / "optimizer.safetensors"))
