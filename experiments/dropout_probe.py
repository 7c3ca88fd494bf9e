"""Why does training through the every-layer head go worse than through the last layer's?
The hypothesis: the warm-start head is fitted on dropout-free (eval-mode) states, and in
training mode the dropout noise of 13 layers read side by side hurts it more than the noise
of the last layer alone.

Fits the two closed-form heads as `warm_start` does (ridge λ 1, both sides stacked, the
teacher's English embedding as target) on a seeded sample of training pairs, then measures
the training objective's `mse` (student sentence of both sides against the teacher, as
`losses/mse.py` computes it) on other training pairs, once in eval mode and with dropout on
(the model's own 0.1, averaged over `--dropout-seeds` draws). No gradient step is taken.

    python -m experiments.dropout_probe --lang vi          # about 10 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.layer_probe import pooled_layers
from optical.data.bitext import read_bitext
from optical.models.student import Student
from optical.models.teacher import load_teacher
from optical.training.warm_start import fit_ridge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="vi")
    parser.add_argument("--data", default="data/{lang}")
    parser.add_argument("--student", default="packaged:multilingual-e5-small")
    parser.add_argument("--teacher", default="packaged:all-minilm-l6-v2")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=4096, help="pairs the heads are fitted on")
    parser.add_argument("--probe-pairs", type=int, default=512, help="other pairs the loss is measured on")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dropout-seeds", type=int, default=3)
    parser.add_argument("--out", default="runs/dropout-probe-{lang}.json")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    pairs = read_bitext(Path(args.data.format(lang=args.lang)) / "train.tsv").pairs
    order = random.Random(args.seed).sample(range(len(pairs)), min(len(pairs), args.pairs + args.probe_pairs))
    fit = [pairs[i] for i in order[:args.pairs]]
    probe = [pairs[i] for i in order[args.pairs:]]
    student = Student.create(args.student, 384, max_length=args.max_length).eval()
    teacher = load_teacher("sentence-transformers", args.teacher, max_length=args.max_length)

    def states(sample):  # [2N, layers + 1, hidden]: the other-language side, then the English side
        return torch.cat([pooled_layers(student, [p[1] for p in sample], show_progress=True),
                          pooled_layers(student, [p[0] for p in sample], show_progress=True)])

    x_fit = states(fit)
    target_fit = torch.from_numpy(teacher.encode([p[0] for p in fit]))
    depth = x_fit.shape[1]
    heads = {"last layer": [depth - 1], "every layer": list(range(depth))}
    fitted = {name: fit_ridge(x_fit[:, layers].flatten(1), torch.cat([target_fit, target_fit]), 1.0)
              for name, layers in heads.items()}
    target = torch.from_numpy(teacher.encode([p[0] for p in probe]))
    target2 = torch.cat([target, target])

    def mse(x, name):  # the sum over both sides, as losses/mse.py with english: true
        w, b = fitted[name]
        return 2.0 * F.mse_loss(x[:, heads[name]].flatten(1) @ w + b, target2).item()

    x_eval = states(probe)
    rows = {name: {"eval": mse(x_eval, name), "train": []} for name in heads}
    student.model.train()
    for seed in range(args.dropout_seeds):
        torch.manual_seed(seed)
        x_train = states(probe)
        for name in heads:
            rows[name]["train"].append(mse(x_train, name))
    for name, row in rows.items():
        row["train_mean"] = sum(row["train"]) / len(row["train"])
        print(f"{name:12s} mse eval mode {row['eval']:.5f}   dropout on {row['train_mean']:.5f}   "
              f"(×{row['train_mean'] / row['eval']:.2f})")
    out = Path(args.out.format(lang=args.lang))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"lang": args.lang, "pairs": len(fit), "probe_pairs": len(probe), "seed": args.seed,
                               "rows": rows}, indent=2) + "\n")
    print(f"table: {out}")


if __name__ == "__main__":
    main()
