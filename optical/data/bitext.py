"""Bitext input: TSV, JSONL or a Hugging Face dataset → a list of (english, other) pairs.

Malformed lines (no tab, an empty side, bad UTF-8, broken JSON) are counted with their line
numbers; `on_bad_line="error"` stops at the first one with `file:line: reason`, `"skip"`
drops them and reports how many. An input without a single good pair is an error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from optical.data.jsonl import parse_json_line
from optical.errors import OpticalError, where


@dataclass
class Bitext:
    """pairs: [(english, other)]; bad: [(line number, reason)] of skipped lines."""

    pairs: list[tuple[str, str]]
    source: str
    bad: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{len(self.pairs)} pairs from {self.source}"
        if self.bad:
            first = ", ".join(f"line {n}: {why}" for n, why in self.bad[:3])
            text += f"; skipped {len(self.bad)} malformed line(s) ({first}{', ...' if len(self.bad) > 3 else ''})"
        return text


def _detect_format(path: Path) -> str:
    suffixes = "".join(path.suffixes).lower()
    if ".jsonl" in suffixes or ".json" in suffixes:
        return "jsonl"
    return "tsv"


def read_bitext(path: str | Path | None = None, fmt: str = "auto", lang: str = "vi",
                en_column: str = "en", other_column: str | None = None, on_bad_line: str = "skip",
                hf_name: str | None = None, hf_config: str | None = None, hf_split: str = "train",
                max_pairs: int | None = None) -> Bitext:
    """Read bitext from a file (TSV `english<TAB>other` or JSONL `{"en": ..., "<lang>": ...}`)
    or a Hugging Face dataset (`hf_name`, columns `en_column` / `other_column`)."""
    other_column = other_column or lang
    if fmt == "hf" or (path is None and hf_name):
        bitext = _read_hf(hf_name or str(path), hf_config, hf_split, en_column, other_column, max_pairs)
    else:
        if path is None:
            raise OpticalError("bitext: give a file (bitext.path / --bitext) or a dataset (bitext.hf_name)")
        path = Path(path)
        if not path.is_file():
            raise OpticalError(f"{path}: bitext file not found")
        fmt = _detect_format(path) if fmt == "auto" else fmt
        bitext = _read_lines(path, fmt, en_column, other_column, on_bad_line, max_pairs)
    if not bitext.pairs:
        raise OpticalError(f"{bitext.source}: no usable sentence pairs"
                           + (f" ({len(bitext.bad)} malformed lines)" if bitext.bad else " (empty input)"))
    return bitext


def _parse_line(line: str, fmt: str, en_column: str, other_column: str) -> tuple[str, str]:
    """One pair from one line, or ValueError with the reason."""
    if fmt == "tsv":
        if "\t" not in line:
            raise ValueError("no tab between the two sides")
        en, other = line.split("\t", 1)
        if "\t" in other:
            raise ValueError("more than one tab")
    else:
        record = parse_json_line(line)  # ValueError: invalid, too deep, a lone surrogate
        if not isinstance(record, dict):
            raise ValueError("JSON line is not an object")
        missing = [k for k in (en_column, other_column) if k not in record]
        if missing:
            raise ValueError(f"missing key {missing[0]!r}")
        en, other = record[en_column], record[other_column]
        if not isinstance(en, str) or not isinstance(other, str):
            raise ValueError("values must be strings")
    en, other = en.strip(), other.strip()
    if not en or not other:
        raise ValueError("empty side")
    return en, other


def _read_lines(path: Path, fmt: str, en_column: str, other_column: str, on_bad_line: str,
                max_pairs: int | None) -> Bitext:
    bitext = Bitext([], str(path))
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                reason = "not valid UTF-8"
            else:
                if not line.strip():
                    continue
                try:
                    bitext.pairs.append(_parse_line(line, fmt, en_column, other_column))
                    if max_pairs and len(bitext.pairs) >= max_pairs:
                        break
                    continue
                except ValueError as err:
                    reason = str(err)
            if on_bad_line == "error":
                raise OpticalError(f"{where(path, number)}: {reason}")
            bitext.bad.append((number, reason))
    return bitext


def _read_hf(name: str, config: str | None, split: str, en_column: str, other_column: str,
             max_pairs: int | None) -> Bitext:
    """Load a Hugging Face dataset; columns may be flat or nested under `translation`."""
    import datasets

    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # datasets raises many types; the user needs one line
        raise OpticalError(f"cannot load dataset {name!r} ({config}, {split}): {str(err).splitlines()[0]}") from None
    return pairs_from_dataset(data, en_column, other_column, source=f"hf:{name}", max_pairs=max_pairs)


def pairs_from_dataset(rows, en_column: str, other_column: str, source: str = "dataset",
                       max_pairs: int | None = None) -> Bitext:
    """Pairs from any iterable of dict rows (a `datasets.Dataset` included)."""
    bitext = Bitext([], source)
    for number, row in enumerate(rows, start=1):
        record = row.get("translation", row) if isinstance(row, dict) else row
        en, other = record.get(en_column), record.get(other_column)
        if not isinstance(en, str) or not isinstance(other, str) or not en.strip() or not other.strip():
            bitext.bad.append((number, f"missing or empty {en_column!r}/{other_column!r}"))
            continue
        bitext.pairs.append((en.strip(), other.strip()))
        if max_pairs and len(bitext.pairs) >= max_pairs:
            break
    return bitext


def split_heldout(pairs: list[tuple[str, str]], n_heldout: int, seed: int) -> tuple[list, list]:
    """Seeded split into (train, heldout); heldout never takes more than a fifth of the data."""
    n_heldout = max(0, min(n_heldout, len(pairs) // 5))
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_heldout])
    return [p for i, p in enumerate(pairs) if i not in held], [pairs[i] for i in sorted(held)]
