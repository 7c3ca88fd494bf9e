"""Bitext input: TSV, JSONL or a Hugging Face dataset → a list of (english, other) pairs.

Malformed lines (no tab, an empty side, bad UTF-8, broken JSON) are counted with their line
numbers; `on_bad_line="error"` stops at the first one with `file:line: reason`, `"skip"`
drops them and reports how many. An input without a single good pair is an error.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from optical.data.jsonl import parse_json_line
from optical.errors import OpticalError, where


@dataclass
class Bitext:
    """pairs: [(english, other)]; bad: [(line number, reason)] of skipped lines; notes: what
    else the reader did or noticed (a header row skipped, a BOM removed, heavy duplication)."""

    pairs: list[tuple[str, str]]
    source: str
    bad: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def bad_counts(self) -> dict[str, int]:
        """How many lines were skipped for each reason, most frequent first."""
        counts = Counter(why for _, why in self.bad)
        return dict(counts.most_common())

    def summary(self) -> str:
        text = f"{len(self.pairs)} pairs from {self.source}"
        if self.bad:
            reasons = ", ".join(f"{n} {why}" for why, n in self.bad_counts().items())
            first = ", ".join(f"line {n}: {why}" for n, why in self.bad[:3])
            text += (f"; skipped {len(self.bad)} malformed line(s) [{reasons}] "
                     f"({first}{', ...' if len(self.bad) > 3 else ''})")
        for note in self.notes:
            text += f"; {note}"
        return text


#: first-column names that mark line 1 of a TSV as a header row, not a sentence pair
_HEADER_NAMES = {"en", "eng", "english", "src", "source", "sentence1", "text_en"}
#: a file whose first bytes are this much NUL is UTF-16/32 without a byte-order mark
_NUL_SHARE = 0.1
#: more duplicate pairs than this share of all pairs earns a warning
DUPLICATE_WARN = 0.5


def _looks_like_header(line: str, other_column: str) -> bool:
    if "\t" not in line:
        return False
    first, _, second = line.partition("\t")
    first, second = first.strip().lower(), second.strip().lower()
    return first in _HEADER_NAMES and (second == other_column.lower() or
                                       (0 < len(second) <= 24 and second.replace("_", "").replace("-", "").isalpha()))


def _check_encoding(path: Path) -> None:
    """UTF-16/32 reads as garbage or NUL-filled lines: refuse it in one line instead."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise OpticalError(f"{path}: the file is UTF-16 (byte-order mark {head[:2].hex(' ')}); save it as UTF-8")
    if head and head.count(0) / len(head) > _NUL_SHARE:
        raise OpticalError(f"{path}: the file is mostly NUL bytes ({head.count(0)} of the first {len(head)}), "
                           f"probably UTF-16 or binary; save it as UTF-8 text")


def _detect_format(path: Path) -> str:
    suffixes = "".join(path.suffixes).lower()
    if ".jsonl" in suffixes or ".json" in suffixes:
        return "jsonl"
    return "tsv"


def read_bitext(path: str | Path | None = None, fmt: str = "auto", lang: str = "vi",
                en_column: str = "en", other_column: str | None = None, on_bad_line: str = "skip",
                hf_name: str | None = None, hf_config: str | None = None, hf_split: str = "train",
                max_pairs: int | None = None, max_bad_fraction: float = 0.05) -> Bitext:
    """Read bitext from a file (TSV `english<TAB>other` or JSONL `{"en": ..., "<lang>": ...}`)
    or a Hugging Face dataset (`hf_name`, columns `en_column` / `other_column`).

    Skipped lines past `max_bad_fraction` of the input stop the read: a file that is mostly
    malformed is the wrong file or the wrong format, not a few stray lines."""
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
        _check_encoding(path)
        bitext = _read_lines(path, fmt, en_column, other_column, on_bad_line, max_pairs)
    if not bitext.pairs:
        raise OpticalError(f"{bitext.source}: no usable sentence pairs"
                           + (f" ({len(bitext.bad)} malformed lines)" if bitext.bad else " (empty input)"))
    total = len(bitext.bad) + len(bitext.pairs)
    if len(bitext.bad) > max_bad_fraction * total:
        n, why = bitext.bad[0]
        raise OpticalError(f"{bitext.source}: {len(bitext.bad)} of {total} lines malformed "
                           f"({100 * len(bitext.bad) / total:.1f}%, more than bitext.max_bad_fraction="
                           f"{max_bad_fraction:g}; first: line {n}: {why}); fix the file or raise bitext.max_bad_fraction")
    duplicates = len(bitext.pairs) - len(set(bitext.pairs))
    if duplicates > DUPLICATE_WARN * len(bitext.pairs):
        bitext.notes.append(f"warning: {duplicates} of {len(bitext.pairs)} pairs are duplicates "
                            f"({100 * duplicates / len(bitext.pairs):.0f}%)")
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
        if "\0" in en or "\0" in other:  # a \u0000 escape: the NUL the raw-byte check cannot see
            raise ValueError("NUL character (\\u0000) in a value")
    en, other = en.strip(), other.strip()
    if not en or not other:
        raise ValueError("empty side")
    return en, other


def _read_lines(path: Path, fmt: str, en_column: str, other_column: str, on_bad_line: str,
                max_pairs: int | None) -> Bitext:
    bitext = Bitext([], str(path))
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # Windows editors start UTF-8 files with a BOM; it is not text
                bitext.notes.append("removed a UTF-8 byte-order mark")
            reason = _read_line(raw, number, fmt, en_column, other_column, bitext)
            if reason is None:
                if max_pairs and len(bitext.pairs) >= max_pairs:
                    break
                continue
            if on_bad_line == "error":
                raise OpticalError(f"{where(path, number)}: {reason}")
            bitext.bad.append((number, reason))
    return bitext


def _read_line(raw: bytes, number: int, fmt: str, en_column: str, other_column: str, bitext: Bitext) -> str | None:
    """Add the line's pair (or note a skipped header) to `bitext`; the reason it is bad, else None."""
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return "not valid UTF-8"
    if not line.strip():
        return None
    if "\0" in line:
        return "NUL byte in the line"
    if number == 1 and fmt == "tsv" and _looks_like_header(line, other_column):
        bitext.notes.append(f"skipped header row on line 1 ({line.strip()!r})")
        return None
    try:
        bitext.pairs.append(_parse_line(line, fmt, en_column, other_column))
    except ValueError as err:
        return str(err)
    return None


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
