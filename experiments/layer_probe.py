"""Which student layers should the closed-form head read? A seconds-per-row probe.

Encodes the bitext's both sides and the CLIR corpora once with the untrained student,
keeping every layer's mean-pooled state, then fits the ridge head (as `warm_start` does:
both sides stacked, the teacher's English embedding as target) on chosen layer sets and
sample sizes, and scores nDCG@10 on `clir-dev/` (for choosing) and `clir/` (for reporting)
in OPTICAL's setting (teacher queries, student documents). The choice of
`student.layers: all` in the shipped recipes comes from this table (docs/results.md).

    python -m experiments.layer_probe --lang vi            # about 5 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from optical.data.bitext import read_bitext
from optical.data.tasks import load_beir
from optical.eval.metrics import compute, parse_metrics
from optical.models.student import Student
from optical.models.teacher import load_teacher
from optical.training.warm_start import fit_ridge

SETS = {"last (12)": [12], "11-12": [11, 12], "10-12": [10, 11, 12], "8-12": [8, 9, 10, 11, 12],
        "0 + 12": [0, 12], "1-12": list(range(1, 13)), "all (0-12)": list(range(13))}


def ndcg(task, doc_vectors: torch.Tensor, query_vectors: torch.Tensor, doc_ids, query_ids) -> float:
    """nDCG@10 of exhaustive cosine search."""
    scores = torch.nn.functional.normalize(query_vectors, dim=-1) @ torch.nn.functional.normalize(doc_vectors, dim=-1).T
    run = {q: {d: float(s) for d, s in zip(doc_ids, row)} for q, row in zip(query_ids, scores.tolist())}
    return compute(parse_metrics(["nDCG@10"]), task.qrels, run)[0]["nDCG@10"]


@torch.no_grad()
def pooled_layers(student: Student, texts: list[str], batch_size: int = 64,
                  show_progress: bool = False) -> torch.Tensor:
    """Mean-pooled states of the embedding output and every layer [N, layers + 1, hidden]."""
    model = student.transformer.auto_model
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), disable=not show_progress, desc="student layers"):
        features = student.tokenize(texts[start:start + batch_size])
        states = model(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                       output_hidden_states=True).hidden_states
        mask = features["attention_mask"].unsqueeze(-1).float()
        chunks.append(torch.stack([(h * mask).sum(1) / mask.sum(1) for h in states], 1))
    return torch.cat(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", default="vi")
    parser.add_argument("--data", default="data/{lang}")
    parser.add_argument("--student", default="packaged:multilingual-e5-small")
    parser.add_argument("--teacher", default="packaged:all-minilm-l6-v2")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", default="runs/layer-probe-{lang}.json")
    args = parser.parse_args()
    data = Path(args.data.format(lang=args.lang))
    student = Student.create(args.student, 384, max_length=args.max_length).eval()
    teacher = load_teacher("sentence-transformers", args.teacher, max_length=args.max_length)

    def pooled(texts):  # [N, layers + 1, hidden]
        return pooled_layers(student, texts, show_progress=True)

    pairs = read_bitext(data / "train.tsv").pairs
    other, english = pooled([p[1] for p in pairs]), pooled([p[0] for p in pairs])
    target = torch.from_numpy(teacher.encode([p[0] for p in pairs], show_progress=True))
    splits = {}
    for split in ("clir-dev", "clir"):
        task = load_beir(data / split)
        doc_ids, query_ids = list(task.corpus), list(task.queries)
        splits[split] = (task, pooled([task.corpus[d] for d in doc_ids]),
                         torch.from_numpy(teacher.encode([task.queries[q] for q in query_ids])), doc_ids, query_ids)

    rows = []
    for name, layers in SETS.items():
        for sample in (4096, None):
            seeds = args.seeds if sample else args.seeds[:1]  # every pair: the seed changes nothing
            row = {"layers": name, "pairs": sample or len(pairs)}
            values = {split: [] for split in splits}
            for seed in seeds:
                chosen = sorted(random.Random(seed).sample(range(len(pairs)), sample)) if sample else list(range(len(pairs)))
                x = torch.cat([other[chosen][:, layers].flatten(1), english[chosen][:, layers].flatten(1)])
                w, b = fit_ridge(x, torch.cat([target[chosen], target[chosen]]), 1.0)
                for split, (task, docs, queries, doc_ids, query_ids) in splits.items():
                    values[split].append(ndcg(task, docs[:, layers].flatten(1) @ w + b, queries, doc_ids, query_ids))
            row.update({split: sum(v) / len(v) for split, v in values.items()})
            rows.append(row)
            print(f"{name:12s} {row['pairs']:6d} pairs  dev {row['clir-dev']:.3f}  test {row['clir']:.3f}", flush=True)
    out = Path(args.out.format(lang=args.lang))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"lang": args.lang, "seeds": args.seeds, "rows": rows}, indent=2))
    print(f"table: {out}")


if __name__ == "__main__":
    main()
