"""What tests/test_multiprocess.py launches on each process (`accelerate launch` runs this
file): a distillation from KEY=VALUE recipe overrides, then every rank writes the sha256 of
its final weights to $RANK_HASH_DIR/weights_rank<rank>.sha256, so the test can check that
all ranks ended with identical weights."""

import hashlib
import os
import sys
from pathlib import Path

import torch

from optical.recipe import recipe_from_dict
from optical.training.loop import Distiller


def weights_digest(model) -> str:
    """sha256 over every tensor of the model's state dict, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def main(overrides: list[str]) -> None:
    distiller = Distiller(recipe_from_dict({}, overrides, path="<test>"), show_progress=False)
    distiller.run()
    folder = Path(os.environ["RANK_HASH_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    rank = distiller.accelerator.process_index
    (folder / f"weights_rank{rank}.sha256").write_text(weights_digest(distiller.final_model()) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
