"""optical.ot.sinkhorn now against the version in an earlier commit (default e9c7328, the
all-log-domain solver before the scaling-domain iterations), on the OT benchmark's inputs.

Loads the old file with `git show <commit>:optical/ot/sinkhorn.py`, times both in float32
under torch.no_grad() (median of --repeats) and compares iterations and float64 plans.

    python -m benchmarks.sinkhorn_before_after [--commit e9c7328] [--threads 1] [--quick]
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks._common import (base_parser, machine_info, markdown_table, out_dir, pick_device,  # noqa: E402
                                synchronize, write_results)
from benchmarks.ot_solver import make_problem  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def load_old(commit: str):
    source = subprocess.run(["git", "show", f"{commit}:optical/ot/sinkhorn.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "sinkhorn_old.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("sinkhorn_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sinkhorn_old"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--commit", default="e9c7328")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    from optical.ot import sinkhorn as new

    old = load_old(args.commit).sinkhorn
    sizes = [(8, 16)] if args.quick else [(8, 16), (64, 32), (64, 128), (256, 32), (256, 128)]
    repeats = args.repeats or (1 if args.quick else 7)
    rows = []
    for batch, tokens in sizes:
        cost, a, b = make_problem(batch, tokens)
        row = {"batch": batch, "tokens": tokens}
        with torch.no_grad():
            for name, fn in (("before", old), ("after", new)):
                c, x, y = cost.float().to(device), a.float().to(device), b.float().to(device)
                fn(c, x, y, args.epsilon, max_iter=1000, tol=args.tol)
                times = []
                for _ in range(repeats):
                    synchronize(device)
                    start = time.perf_counter()
                    result = fn(c, x, y, args.epsilon, max_iter=1000, tol=args.tol)
                    synchronize(device)
                    times.append(time.perf_counter() - start)
                row[name] = {"seconds": statistics.median(times), "iterations": result.iterations}
            c, x, y = cost.to(device), a.to(device), b.to(device)
            plans = [fn(c, x, y, args.epsilon, max_iter=1000, tol=args.tol).plan for fn in (old, new)]
        row["speedup"] = row["before"]["seconds"] / row["after"]["seconds"]
        row["max_plan_difference_float64"] = float((plans[0] - plans[1]).abs().max())
        rows.append(row)
        print(f"{batch}x{tokens}: {row['before']['seconds'] * 1e3:.1f} ms -> {row['after']['seconds'] * 1e3:.1f} ms")
    payload = {"benchmark": "sinkhorn_before_after",
               "command": "python -m benchmarks.sinkhorn_before_after " + " ".join(argv if argv is not None else sys.argv[1:]),
               "settings": {"commit": args.commit, "epsilon": args.epsilon, "tol": args.tol, "max_iter": 1000,
                            "device": str(device), "timing_dtype": "float32"},
               "machine": machine_info(device), "rows": rows}
    m = payload["machine"]
    md = "\n".join([f"# optical.ot.sinkhorn: commit {args.commit} vs working tree ({device}, "
                    f"{m['torch_threads']} torch thread(s))", "",
                    f"`{payload['command'].strip()}` — ε = {args.epsilon}, tol = {args.tol}, float32 timings, "
                    "float64 plan comparison.", "",
                    markdown_table(["batch", "tokens", "before (ms)", "after (ms)", "speed-up", "iterations before/after",
                                    "max abs plan difference (float64)"],
                                   [[r["batch"], f"{r['tokens']}×{r['tokens']}", r["before"]["seconds"] * 1e3,
                                     r["after"]["seconds"] * 1e3, f"{r['speedup']:.1f}×",
                                     f"{r['before']['iterations']}/{r['after']['iterations']}",
                                     r["max_plan_difference_float64"]] for r in rows])])
    json_path, md_path = write_results("sinkhorn_before_after", out_dir(args), payload, md)
    print(f"wrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
