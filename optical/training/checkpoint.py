"""Atomic checkpoints: student (safetensors), optimizer state (safetensors), trainer state (JSON).

Layout of `<run>/checkpoints/step-000100/`:
  student/                 a sentence-transformers folder
  optimizer.safetensors    every optimizer state tensor, keyed `<param index>.<name>`
  trainer_state.json       step, scheduler, optimizer hyper-parameters, RNG states, metrics
A checkpoint is written into a temporary folder and renamed into place, and `latest`
(a one-line file) is replaced atomically after it, so a crash at any moment leaves the
previous checkpoint intact and `latest` pointing at a complete one. The RNG states (torch
CPU and CUDA, Python `random`, numpy) are plain JSON lists, never pickles: a resumed run
draws the same dropout masks as an unbroken one.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from optical.files import atomic_dir, atomic_write_text


def rng_state() -> dict:
    """Every RNG that drives training (dropout, sampling), as JSON-able lists."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state().tolist(), "python": [version, list(internal), gauss],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`; also takes the torch-only list of older checkpoints."""
    if "rng" not in state:  # checkpoints written before every RNG was saved
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        return
    rng = state["rng"]
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in rng["cuda"]])


def first_non_finite(module: torch.nn.Module) -> str | None:
    """Name of the first floating-point tensor of `module` holding NaN or inf, else None."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def save_student(student, target: Path) -> Path:
    """Write the student folder atomically, so a kill never leaves `target` half-written."""
    with atomic_dir(target) as tmp:
        student.save(tmp)
    return Path(target)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Remove the temporary files and folders that killed writes left in a run directory
    (`.<name>.*.tmp` beside the run's files and checkpoints, see optical.files); returns what was removed."""
    run_dir = Path(run_dir)
    found = [*run_dir.glob(".*.tmp"), *(run_dir / "checkpoints").glob(".*.tmp")]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


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
    """Write `<run_dir>/checkpoints/step-<step>/` atomically, point `latest` at it, and keep
    only the newest `keep` checkpoints."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        student.save(tmp / "student")
        tensors, meta = optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        state = {"step": step, "optimizer": meta, "scheduler": scheduler.state_dict(),
                 "rng": rng_state(), **extra}
        (tmp / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
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
