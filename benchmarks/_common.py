"""Shared helpers: device choice, synchronised timing, memory, machine info, JSON + markdown out.

Timings are medians over repeats (the benchmark machines are shared and noisy); every
benchmark compares against a reference measured in the same run, so the ratios are the
result and absolute seconds are context.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes, a few seconds")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per row (median reported)")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for the JSON and markdown (default benchmarks/results, "
                             "benchmarks/results/quick with --quick)")
    return parser


def out_dir(args) -> Path:
    """--out, else benchmarks/results (quick runs go to results/quick, never over real ones)."""
    if args.out is not None:
        return Path(args.out)
    return RESULTS_DIR / "quick" if getattr(args, "quick", False) else RESULTS_DIR


def pick_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def synchronize(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device, repeats: int = 5, warmup: int = 1) -> tuple[float, list[float], object]:
    """Median wall time of `fn()` in seconds (GPU work synchronised), all times, last result."""
    result = None
    for _ in range(warmup):
        result = fn()
        synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """Peak memory while the block runs, above what was in use when it started.

    CUDA: torch.cuda.max_memory_allocated (exact, allocator level). CPU: resident set size
    sampled every `interval` seconds by a background thread (psutil), so it includes the
    allocator's and the libraries' own buffers and can miss spikes shorter than the interval.
    """

    def __init__(self, device, interval: float = 0.002):
        self.device, self.interval = device, interval
        self.peak_bytes = 0
        self.baseline_bytes = 0

    def __enter__(self) -> "PeakMemory":
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline_bytes = rss_bytes()
            self._peak = self.baseline_bytes
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, rss_bytes())

    @property
    def added_bytes(self) -> int:
        return max(0, self.peak_bytes - self.baseline_bytes)

    @property
    def kind(self) -> str:
        return "cuda max_memory_allocated" if self.device.type == "cuda" else "process RSS (psutil, sampled)"


def machine_info(device) -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_average_when_recorded"] = [round(x, 2) for x in os.getloadavg()]
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            if value == 0:
                return "0"
            if abs(value) >= 100:
                return f"{value:.0f}"
            if abs(value) >= 1:
                return f"{value:.2f}"
            if abs(value) >= 1e-3:
                return f"{value:.4f}"
            return f"{value:.1e}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, out_dir: Path, payload: dict, markdown: str) -> tuple[Path, Path]:
    """`<out>/<name>.json` and `<out>/<name>.md`; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return json_path, md_path


def mib(n_bytes: float) -> float:
    return n_bytes / 2**20
