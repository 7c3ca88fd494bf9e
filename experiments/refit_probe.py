"""How good is a trained student's head? Its own head against closed-form heads refitted on
its trained encoder (the last layer, and every layer side by side).

For a finished run (its `student/` kept): encodes a seeded sample of the run's training pairs
(both sides) and the CLIR corpora with the trained encoder, keeping every layer's mean-pooled
state; fits ridge heads (λ 1, both sides stacked, the teacher's English embedding as target,
as `warm_start` does) and scores nDCG@10 on `clir-dev/` and `clir/` in OPTICAL's setting.
This is the measurement behind `warm_start.refit` (docs/results.md).

    python -m experiments.refit_probe runs/probe-mse-s1          # about 4 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from experiments.layer_probe import ndcg, pooled_layers
from optical.data.bitext import read_bitext
from optical.data.tasks import load_beir
from optical.models.student import Student
from optical.models.teacher import load_teacher
from optical.run_dir import load_run
from optical.training.warm_start import fit_ridge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished `optical distill` run with its student/")
    parser.add_argument("--pairs", type=int, default=4096, help="training pairs the heads are fitted on")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    recipe, student_dir = load_run(args.run)
    student = Student.load(student_dir).eval()
    if student.layers is not None:
        raise SystemExit(f"{args.run}: its student already reads several layers; this probe compares "
                         f"a last-layer head with refitted ones")
    teacher = load_teacher(recipe.teacher.kind, recipe.teacher.model_spec, max_length=recipe.teacher.max_length)
    pairs = read_bitext(recipe.bitext.path).pairs
    chosen = sorted(random.Random(args.seed).sample(range(len(pairs)), min(args.pairs, len(pairs))))
    sample = [pairs[i] for i in chosen]
    other, english = pooled_layers(student, [p[1] for p in sample]), pooled_layers(student, [p[0] for p in sample])
    target = torch.from_numpy(teacher.encode([p[0] for p in sample]))
    heads = {}
    for name, layers in (("refit on the last layer", [-1]), ("refit on every layer", list(range(other.shape[1])))):
        x = torch.cat([other[:, layers].flatten(1), english[:, layers].flatten(1)])
        heads[name] = (layers, *fit_ridge(x, torch.cat([target, target]), 1.0))
    data = Path(recipe.eval.path).parent if recipe.eval.path else Path(recipe.bitext.path).parent
    rows = {"own head": {}, **{name: {} for name in heads}}
    for split in ("clir-dev", "clir"):
        task = load_beir(data / split)
        doc_ids, query_ids = list(task.corpus), list(task.queries)
        texts = [task.corpus[d] for d in doc_ids]
        queries = torch.from_numpy(teacher.encode([task.queries[q] for q in query_ids]))
        rows["own head"][split] = ndcg(task, torch.from_numpy(student.encode(texts)), queries, doc_ids, query_ids)
        docs = pooled_layers(student, texts)
        for name, (layers, w, b) in heads.items():
            rows[name][split] = ndcg(task, docs[:, layers].flatten(1) @ w + b, queries, doc_ids, query_ids)
    for name, row in rows.items():
        print(f"{name:26s} dev {row['clir-dev']:.3f}  test {row['clir']:.3f}")
    out = args.run / "refit_probe.json"
    out.write_text(json.dumps({"pairs": len(sample), "seed": args.seed, "rows": rows}, indent=2))
    print(f"table: {out}")


if __name__ == "__main__":
    main()
