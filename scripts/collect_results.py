"""Collect runs/results-vi/*/eval-*/metrics.json into the markdown tables of docs/results.md."""

import json
import sys
from pathlib import Path

ORDER = ["teacher", "e5-as-is", "untrained", "warm-start-only", "mse", "token-ot", "token-ot+mse",
         "token-ot+mse-no-warm-start", "token-ot-eps0.1", "token-ot-eps0.02", "token-ot-idf",
         "token-ot-unbalanced", "token-ot+mse100", "token-ot-layer-2", "token-ot-best", "mse-150-steps",
         "token-ot-best-150-steps"]
CLIR = ["nDCG@10", "AP@100", "RR@10", "R@10"]


def load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def task_entry(metrics: dict, prefix: str):
    for name, entry in metrics.get("tasks", {}).items():
        if name.startswith(prefix):
            yield name, entry


def main(out: Path) -> None:
    rows = ["| run | " + " | ".join(CLIR) + " |", "|---|" + "---:|" * len(CLIR)]
    names = [n for n in ORDER if (out / n).is_dir()] + sorted(p.name for p in out.iterdir()
                                                              if p.is_dir() and p.name not in ORDER)
    for name in names:
        metrics = load(out / name / "eval-clir" / "metrics.json")
        if not metrics:
            continue
        for _, entry in task_entry(metrics, "clir"):
            if name == "teacher" and "english" in entry:
                rows.append("| teacher on the English pages (upper bound) | "
                            + " | ".join(f"{entry['english'][m]:.3f}" for m in CLIR) + " |")
            label = "teacher on the Vietnamese pages (lower bound)" if name == "teacher" else name
            rows.append(f"| {label} | " + " | ".join(f"{entry['metrics'][m]:.3f}" for m in CLIR) + " |")
    print("\n".join(rows))
    print()
    rows = ["| run | en→vi R@1 | en→vi MRR | vi→en R@1 | vi→en MRR |", "|---|---:|---:|---:|---:|"]
    for name in names:
        metrics = load(out / name / "eval-bitext" / "metrics.json")
        if not metrics:
            continue
        values = {}
        for task, entry in task_entry(metrics, "bitext"):
            direction = "en-vi" if task.endswith("en-vi") else "vi-en"
            values[direction] = entry["metrics"]
        cells = [f"{values[d][m]:.3f}" if d in values else "–" for d in ("en-vi", "vi-en") for m in ("R@1", "RR")]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(rows))
    for name in names:
        m = load(out / name / "metrics.json")
        if m and m.get("warm_start"):
            ws = m["warm_start"]
            print(f"\n{name}: warm start held-out cosine {ws['heldout_cosine_before']:.3f} → "
                  f"{ws['heldout_cosine_after']:.3f}; training {m['seconds']} s")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/results-vi"))
