"""How should the tokens `student.new_tokens` adds start? A minutes-per-row probe.

For each setting the untrained student (no head fitted, no training) encodes a language's
CLIR sets on both sides, English titles and target-language pages alike, and nDCG@10 is scored on
`clir-dev/` (for choosing) and `clir/` (for reporting):

- `shipped`: the vocabulary as it ships;
- `mean`: the new tokens added, every new row the mean embedding (what a plain resize gives);
- `fitted λ`: the new tokens added, their rows fitted in closed form from the bitext
  (`optical.models.vocabulary.fit_new_embeddings`) with ridge λ.

The ridge `EMBEDDING_RIDGE` in optical/models/vocabulary.py comes from this table on dz
(docs/results.md, "Dzongkha").

    python -m experiments.vocabulary_probe --lang dz        # about 15 min on one CPU thread
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from optical.data.bitext import read_bitext
from optical.data.tasks import load_beir
from optical.models.student import Student
from optical.models.vocabulary import extend_vocabulary

from experiments.layer_probe import ndcg

RIDGES = (1e-3, 1e-2, 0.1, 1.0)


def score(student: Student, splits: dict) -> dict[str, float]:
    """nDCG@10 of the student on both sides of each split."""
    out = {}
    for split, task in splits.items():
        doc_ids, query_ids = list(task.corpus), list(task.queries)
        docs = torch.from_numpy(student.encode([task.corpus[d] for d in doc_ids]))
        queries = torch.from_numpy(student.encode([task.queries[q] for q in query_ids]))
        out[split] = ndcg(task, docs, queries, doc_ids, query_ids)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="dz")
    parser.add_argument("--data", default="data/{lang}")
    parser.add_argument("--student", default="packaged:multilingual-e5-small")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--out", default="runs/vocabulary-probe-{lang}.json")
    args = parser.parse_args()
    data = Path(args.data.format(lang=args.lang))
    pairs = read_bitext(data / "train.tsv").pairs
    splits = {split: load_beir(data / split) for split in ("clir-dev", "clir")}

    def fresh() -> Student:
        return Student.create(args.student, 384, max_length=args.max_length).eval()

    rows = []

    def report(name: str, student: Student, extension=None) -> None:
        row = {"setting": name, **score(student, splits), **({"added": extension.added,
               "unknown_after": extension.unknown_after} if extension else {})}
        rows.append(row)
        print(f"{name:14s} dev {row['clir-dev']:.3f}  test {row['clir']:.3f}", flush=True)

    report("shipped", fresh())
    student = fresh()
    extension = extend_vocabulary(student, pairs, 8000)
    weight = student.transformer.auto_model.get_input_embeddings().weight
    with torch.no_grad():  # what a plain resize with mean initialisation gives
        n_old = weight.shape[0] - extension.added
        weight[n_old:] = weight[:n_old].mean(0)
    report("mean", student, extension)
    for ridge in RIDGES:
        student = fresh()
        report(f"fitted {ridge:g}", student, extend_vocabulary(student, pairs, 8000, ridge=ridge))
    out = Path(args.out.format(lang=args.lang))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"lang": args.lang, "student": args.student, "rows": rows}, indent=2))
    print(f"table: {out}")


if __name__ == "__main__":
    main()
