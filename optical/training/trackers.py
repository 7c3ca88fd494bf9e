"""Experiment trackers for `optical distill`, switched on by the recipe's `train.trackers`.

accelerate's trackers (TensorBoard, W&B, MLflow, Comet, Aim, ClearML, DVCLive) plus `csv`,
a small :class:`CSVTracker` here. They receive what `log.jsonl` receives, at the same
moments (every step; every held-out check; the final check), and the flattened recipe as
their configuration. Their files go under `<run>/trackers/`. Logging is all they add: no
RNG is drawn for them and nothing else in the loop changes, so a run's numbers are the same
with trackers on or off (tested).
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from optical.errors import OpticalError, writing
from optical.files import atomic_write_text

#: accelerate's tracker name → the package to install for it
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet-ml",
            "aim": "aim", "clearml": "clearml", "dvclive": "dvclive"}
TRACKERS = ("csv", *PACKAGES)
CSV_HEADER = "step,name,value\n"


def tracker_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "trackers"


def check_trackers(names: tuple[str, ...]) -> None:
    """One line naming the package to install for a tracker that is not installed."""
    from accelerate.tracking import get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name in PACKAGES and name not in available:
            raise OpticalError(f"train.trackers: {name!r} is not installed: pip install {PACKAGES[name]}")


def tracker_config(recipe) -> dict:
    """The recipe as flat `section.key` → scalar, the form every tracker stores as its config."""
    from optical.recipe import flatten

    config = {}
    for key, value in flatten(recipe.to_dict()).items():
        if value is None:
            value = "null"
        elif not isinstance(value, (bool, int, float, str)):
            value = str(value)
        config[key] = value
    return config


def tracker_values(record: dict) -> dict:
    """A log.jsonl record as tracker values: numbers only, held-out metrics as `heldout/<name>`."""
    values = {}
    for key, value in record.items():
        if key in ("step", "final"):
            continue
        if isinstance(value, dict):
            values.update({f"{key}/{k}": float(v) for k, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = float(value)
    return values


@contextmanager
def rng_untouched():
    """Restore every RNG the loop draws from (torch CPU/CUDA, Python, numpy) after the block:
    a tracker that seeds or draws at start-up (wandb picks run ids) cannot move the run."""
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)


def truncate_csv(path: Path, step: int) -> None:
    """Drop the rows a resumed run writes again (steps after its checkpoint), like log.jsonl."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        head = line.split(",", 1)[0]
        if head.isdigit() and int(head) <= step:
            kept.append(line)
    atomic_write_text(path, CSV_HEADER + "".join(line + "\n" for line in kept))


def make_csv_tracker(path: Path):
    """A :class:`CSVTracker` (built here so accelerate is imported only when trackers are on)."""
    from accelerate.tracking import GeneralTracker

    class CSVTracker(GeneralTracker):
        """`step,name,value` rows appended to one file (long format: held-out metrics come
        only every `eval_every` steps); the configuration is the run's recipe.yaml."""

        name = "csv"
        requires_logging_directory = False
        main_process_only = True

        def __init__(self, path: Path):
            super().__init__()
            self.path = Path(path)

        @property
        def tracker(self):
            return self.path

        def start(self):
            if not self.path.is_file():
                atomic_write_text(self.path, CSV_HEADER)

        def store_init_configuration(self, values: dict):
            pass  # recipe.yaml, beside it in the run folder, is the configuration

        def log(self, values: dict, step: int | None = None, **kwargs):
            rows = "".join(f"{'' if step is None else step},{name},{value!r}\n" for name, value in values.items())
            with writing(self.path), self.path.open("a", encoding="utf-8") as handle:
                handle.write(rows)

        def finish(self):
            pass

    return CSVTracker(path)


def accelerator_options(names: tuple[str, ...], run_dir: Path) -> dict:
    """`Accelerator(...)` keyword arguments for the recipe's trackers ({} when none)."""
    if not names:
        return {}
    log_with = [make_csv_tracker(tracker_dir(run_dir) / "metrics.csv") if name == "csv" else name
                for name in names]
    return {"log_with": log_with, "project_dir": str(tracker_dir(run_dir))}


def start_trackers(accelerator, recipe, run_dir: Path, resume_step: int | None = None) -> None:
    """Make `<run>/trackers/`, trim the CSV of steps a resumed run redoes, and start the trackers
    with the flattened recipe as their configuration (every RNG left as it was)."""
    folder = tracker_dir(run_dir)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
        truncate_csv(folder / "metrics.csv", resume_step)
    init_kwargs = {"wandb": {"dir": str(folder)}}
    with rng_untouched():
        try:
            accelerator.init_trackers(recipe.name, config=tracker_config(recipe), init_kwargs=init_kwargs)
        except OpticalError:
            raise
        except Exception as err:  # W&B not logged in, an MLflow server not reachable, ...
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise OpticalError(f"train.trackers: {', '.join(recipe.train.trackers)}: could not start "
                               f"({type(err).__name__}: {first[:200]})") from None


def finish_trackers(accelerator) -> None:
    """Close every tracker (flush files, end the W&B run). Not `accelerator.end_training()`:
    that also destroys the process group, which a grid of runs in one process still needs."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()

