"""Scaling benchmark: time and memory against corpus size (faiss) and bitext size (reader).

Corpus: random unit vectors, dim 384, around 1000 random centres (the index does not care
what produced them, only how they cluster), at
10k, 100k and 1M documents. For each size: an IVF index through `optical.eval.index.build_index`
(`ivf:nlist=N,nprobe=32`, N = min(1024, size/39) so that faiss has ≥ 39 training points
per list) and the exact flat index for reference; build time (IVF: train + add), search
time for 1000 queries at k = 100 (`optical.eval.index.search`), resident memory added by the
index, and IVF's recall@10 against the exact top 10. Queries are noisy copies of corpus
vectors, so that neighbourhoods exist as they do for real embeddings.

Bitext: TSV files of 10k, 100k and 1M pairs (data/vi/train.tsv repeated), read with
`optical.data.bitext.read_bitext` in a fresh process each, reporting time and peak RSS
(the reader materialises every pair; memory grows with the file).

Writes benchmarks/results/scaling.{json,md} and docs/benchmarks_scaling.png.

    python -m benchmarks.scaling [--quick] [--no-plot]
"""

from __future__ import annotations

import argparse

import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks._common import (base_parser, machine_info, markdown_table, mib, out_dir, PeakMemory,  # noqa: E402
                                write_results)

ROOT = Path(__file__).resolve().parent.parent
DIM = 384
CORPUS_SIZES = [10_000, 100_000, 1_000_000]
BITEXT_SIZES = [10_000, 100_000, 1_000_000]
QUICK_CORPUS, QUICK_BITEXT = [2_000, 10_000], [1_000, 10_000]
N_QUERIES, K, NPROBE = 1000, 100, 32
PLOT = ROOT / "docs" / "benchmarks_scaling.png"


def unit_vectors(n: int, rng: np.random.Generator, dim: int = DIM, clusters: int = 1000,
                 chunk: int = 100_000) -> np.ndarray:
    """n random unit vectors around `clusters` random unit centres (cosine ≈ 0.5 within a
    cluster), so that neighbourhoods exist as in real embeddings."""
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        block = centres[rng.integers(0, clusters, size)]
        block += rng.standard_normal((size, dim), dtype=np.float32) / np.sqrt(dim)
        out[start:start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def corpus_row(n: int, device, progress=print) -> dict:
    import torch

    from optical.eval.index import build_index, search

    rng = np.random.default_rng(n)
    vectors = unit_vectors(n, rng)
    picks = rng.choice(n, N_QUERIES, replace=False)
    queries = vectors[picks] + 0.05 * rng.standard_normal((N_QUERIES, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    nlist = max(1, min(1024, n // 39))
    row = {"documents": n, "vectors_mib": mib(vectors.nbytes), "nlist": nlist, "nprobe": NPROBE}
    results = {}
    for kind, spec in (("flat", "flat"), ("ivf", f"ivf:nlist={nlist},nprobe={NPROBE}")):
        gc.collect()
        with PeakMemory(torch.device("cpu")) as peak:
            start = time.perf_counter()
            index = build_index(vectors, spec)
            build = time.perf_counter() - start
        import faiss

        index_bytes = int(faiss.serialize_index(index).nbytes)  # what the index holds (vectors + lists)
        start = time.perf_counter()
        _, ids = search(index, queries, K)
        search_seconds = time.perf_counter() - start
        results[kind] = ids
        row[kind] = {"spec": spec, "build_seconds": build, "search_seconds": search_seconds,
                     "queries_per_second": N_QUERIES / search_seconds, "memory_added_mib": mib(peak.added_bytes),
                     "index_mib": mib(index_bytes)}
        del index
        progress(f"{n:>9,} docs {kind:4s}: build {build:.2f}s, search {search_seconds:.3f}s, "
                 f"+{mib(peak.added_bytes):.0f} MiB RSS, index {mib(index_bytes):.0f} MiB")
    exact, approx = results["flat"][:, :10], results["ivf"][:, :10]
    row["ivf"]["recall_at_10_vs_flat"] = float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)]))
    return row


def write_bitext(path: Path, n: int) -> int:
    source = ROOT / "data" / "vi" / "train.tsv"
    if not source.is_file():
        source = ROOT / "tests" / "fixtures" / "bitext_vi.tsv"
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if "\t" in line]
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(lines[i % len(lines)] + "\n")
    return path.stat().st_size


def bitext_child(path: str) -> dict:
    import torch

    from benchmarks._common import PeakMemory
    from optical.data.bitext import read_bitext

    with PeakMemory(torch.device("cpu"), interval=0.005) as peak:
        start = time.perf_counter()
        bitext = read_bitext(path, "tsv", "vi")
        seconds = time.perf_counter() - start
    return {"pairs": len(bitext.pairs), "seconds": seconds, "rss_before_mib": mib(peak.baseline_bytes),
            "peak_rss_mib": mib(peak.peak_bytes), "added_mib": mib(peak.added_bytes)}


def bitext_rows(sizes, progress=print) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"bitext_{n}.tsv"
            size = write_bitext(path, n)
            cmd = [sys.executable, "-m", "benchmarks.scaling", "--bitext-child", str(path)]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["file_mib"] = mib(size)
            row["pairs_per_second"] = row["pairs"] / row["seconds"]
            rows.append(row)
            progress(f"bitext {n:>9,} pairs ({row['file_mib']:.0f} MiB): {row['seconds']:.2f}s, "
                     f"+{row['added_mib']:.0f} MiB")
    return rows


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, memory, reader) = plt.subplots(1, 3, figsize=(14, 4.2))
    rows = payload["corpus"]
    n = [r["documents"] for r in rows]
    for kind, colour in (("flat", "C0"), ("ivf", "C1")):
        speed.plot(n, [r[kind]["build_seconds"] for r in rows], "o-", color=colour, label=f"{kind}: build")
        speed.plot(n, [r[kind]["search_seconds"] for r in rows], "s--", color=colour,
                   label=f"{kind}: search, {N_QUERIES} queries, k={K}")
        memory.plot(n, [r[kind]["index_mib"] for r in rows], "o-", color=colour, label=f"{kind} index size")
    speed.set(xscale="log", yscale="log", xlabel="documents (dim 384)", ylabel="seconds",
              title="faiss through optical.eval.index (1 thread)")
    bitext = payload["bitext"]
    pairs = [r["pairs"] for r in bitext]
    memory.plot(pairs, [r["added_mib"] for r in bitext], "^-", color="C2", label="read_bitext peak RSS added")
    memory.set(xscale="log", yscale="log", xlabel="documents / bitext pairs", ylabel="MiB", title="memory")
    reader.plot(pairs, [r["seconds"] for r in bitext], "^-", color="C2", label="read_bitext")
    reader.set(xscale="log", yscale="log", xlabel="bitext pairs (TSV)", ylabel="seconds", title="bitext reader")
    for ax in (speed, memory, reader):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"optical scaling ({payload['machine'].get('cpu_count')} CPU cores, shared)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_markdown(p: dict) -> str:
    m = p["machine"]
    lines = [f"# Scaling ({m.get('cpu_model', m.get('processor'))}, {m.get('cpu_count')} cores, "
             f"faiss threads {p['settings']['faiss_threads']})", "",
             f"`{p['command'].strip()}` — random unit vectors around 1000 random centres, dim {DIM}; {N_QUERIES} queries, k = {K}.", "",
             markdown_table(["documents", "index", "build (s)", "search (s)", "queries/s", "index size (MiB)",
                             "RSS added by build (MiB)",
                             "recall@10 vs flat"],
                            [[f"{r['documents']:,}", r[kind]["spec"], r[kind]["build_seconds"],
                              r[kind]["search_seconds"], r[kind]["queries_per_second"], r[kind]["index_mib"],
                              r[kind]["memory_added_mib"],
                              f"{r['ivf']['recall_at_10_vs_flat']:.3f}" if kind == "ivf" else "1 (exact)"]
                             for r in p["corpus"] for kind in ("flat", "ivf")]),
             "", "Bitext reader (`read_bitext`, one fresh process per size, peak RSS sampled every 5 ms):", "",
             markdown_table(["pairs", "file (MiB)", "seconds", "pairs/s", "peak RSS added (MiB)"],
                            [[f"{r['pairs']:,}", r["file_mib"], r["seconds"], r["pairs_per_second"], r["added_mib"]]
                             for r in p["bitext"]])]
    if p.get("plot"):
        lines += ["", f"Plot: `{p['plot']}`"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--faiss-threads", type=int, default=None, help="faiss OpenMP threads (default: faiss')")
    parser.add_argument("--bitext-child", help=argparse.SUPPRESS)
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from <out>/scaling.json")
    args = parser.parse_args(argv)
    if args.replot:
        plot(json.loads((out_dir(args) / "scaling.json").read_text(encoding="utf-8")), PLOT)
        return {}
    if args.bitext_child:
        print(json.dumps(bitext_child(args.bitext_child)))
        return {}
    import faiss
    import torch

    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    corpus_sizes = QUICK_CORPUS if args.quick else CORPUS_SIZES
    bitext_sizes = QUICK_BITEXT if args.quick else BITEXT_SIZES
    payload = {"benchmark": "scaling",
               "command": "python -m benchmarks.scaling " + " ".join(argv if argv is not None else sys.argv[1:]),
               "settings": {"dim": DIM, "queries": N_QUERIES, "k": K, "nprobe": NPROBE,
                            "faiss_threads": faiss.omp_get_max_threads(), "quick": args.quick},
               "machine": machine_info(torch.device("cpu"))}
    payload["corpus"] = [corpus_row(n, "cpu") for n in corpus_sizes]
    payload["bitext"] = bitext_rows(bitext_sizes)
    if not args.no_plot and not args.quick:
        plot(payload, PLOT)
        payload["plot"] = str(PLOT.relative_to(ROOT))
    json_path, md_path = write_results("scaling", out_dir(args), payload, to_markdown(payload))
    print(f"wrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
