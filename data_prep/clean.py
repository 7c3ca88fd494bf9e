"""Cleaning shared by every bitext source.

Each pair goes through :func:`normalize_text` on both sides, then is dropped for the
first reason that applies, in this order:

- ``empty``: a side is empty after normalisation;
- ``duplicate``: the same (english, other) pair was already kept (here or in ``seen``);
- ``length_ratio``: the sides' lengths are far apart (:func:`length_ratio` above the limit),
  a sign of a misalignment or a half translation;
- ``untranslated``: the other side is (nearly) the English one, measured by sacrebleu
  chrF (0-100) of the other side against the English one; copies teach a student nothing.

Run as ``python -m data_prep.clean IN.tsv --out OUT.tsv``.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from optical.errors import OpticalError, where

REASONS = ("empty", "duplicate", "length_ratio", "untranslated")
DEFAULT_MAX_LENGTH_RATIO = 3.0
DEFAULT_MAX_CHRF = 80.0

# Only things shaped like tags: "<b>", "</span>", "<a href=...>", "<br/>".
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>")
_SPACE = re.compile(r"\s+")

Pair = tuple[str, str]


def normalize_text(text: str) -> str:
    """Strip markup tags, unescape entities, NFC-normalise and collapse all whitespace.

    Tags go before unescaping so that an escaped ``&lt;Enter&gt;`` survives as text.
    Collapsing whitespace also removes tabs and newlines, which the TSV format forbids.
    """
    text = _TAG.sub(" ", text)
    # Twice: catalogues and exported HTML often hold doubly escaped text ("&amp;amp;").
    text = html.unescape(html.unescape(text))
    text = unicodedata.normalize("NFC", text)
    return _SPACE.sub(" ", text).strip()


def normalize_space(text: str) -> str:
    """NFC-normalise and collapse whitespace only (for text a real HTML parser produced,
    where a literal "<" is content, not a tag)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def length_ratio(a: str, b: str, smoothing: int = 5) -> float:
    """Ratio of the longer to the shorter side in characters, smoothed for short strings.

    Adding ``smoothing`` to both lengths keeps "OK"/"Đồng ý" from looking misaligned.
    """
    la, lb = len(a) + smoothing, len(b) + smoothing
    return max(la, lb) / min(la, lb)


class _Chrf:
    """Lazily built sacrebleu chrF scorer (building it once is what makes it cheap)."""

    def __init__(self) -> None:
        self._metric = None

    def __call__(self, hypothesis: str, reference: str) -> float:
        if hypothesis == reference:
            return 100.0
        if self._metric is None:
            from sacrebleu.metrics import CHRF

            self._metric = CHRF()
        return self._metric.sentence_score(hypothesis, [reference]).score


_chrf = _Chrf()


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF (0-100) of ``hypothesis`` against ``reference``."""
    return _chrf(hypothesis, reference)


def clean_pairs(
    pairs: Iterable[Pair],
    *,
    max_length_ratio: float = DEFAULT_MAX_LENGTH_RATIO,
    max_chrf: float = DEFAULT_MAX_CHRF,
    seen: set[Pair] | None = None,
    normalize: bool = True,
) -> tuple[list[Pair], Counter]:
    """Clean ``(english, other)`` pairs; return the kept pairs and drops per reason.

    ``seen`` is updated with every kept pair, so passing the same set to several calls
    removes pairs that repeat across splits (clean the test split first to keep it whole).
    The counter holds every reason of :data:`REASONS` (zero when nothing was dropped).
    """
    seen = set() if seen is None else seen
    dropped: Counter = Counter({reason: 0 for reason in REASONS})
    kept: list[Pair] = []
    for english, other in pairs:
        if normalize:
            english, other = normalize_text(english), normalize_text(other)
        if not english or not other:
            dropped["empty"] += 1
        elif (english, other) in seen:
            dropped["duplicate"] += 1
        elif length_ratio(english, other) > max_length_ratio:
            dropped["length_ratio"] += 1
        elif chrf(other, english) > max_chrf:
            dropped["untranslated"] += 1
        else:
            seen.add((english, other))
            kept.append((english, other))
    return kept, dropped


def write_tsv(pairs: Iterable[Pair], path: str | Path) -> int:
    """Write pairs as UTF-8 ``english<TAB>other`` lines; return how many were written.

    Sides must already be normalised (no tab or newline inside); this is checked because a
    stray tab would silently shift columns for every reader.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for english, other in pairs:
            for side in (english, other):
                if "\t" in side or "\n" in side or "\r" in side:
                    raise ValueError(f"tab or newline inside a side: {side!r}")
            f.write(f"{english}\t{other}\n")
            n += 1
    return n


def read_tsv(path: str | Path) -> list[Pair]:
    """Read an ``english<TAB>other`` file; a line without exactly one tab is an error."""
    path = Path(path)
    if not path.is_file():
        raise OpticalError(f"{path}: no such file")
    pairs = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise OpticalError(
                    f"{where(path, number)}: expected 'english<TAB>other', found {len(parts)} columns"
                )
            pairs.append((parts[0], parts[1]))
    return pairs


def add_clean_arguments(parser: argparse.ArgumentParser) -> None:
    """The cleaning options every data_prep command shares."""
    parser.add_argument("--max-length-ratio", type=float, default=DEFAULT_MAX_LENGTH_RATIO,
                        help="drop pairs whose (smoothed) character-length ratio is above this "
                             "(default %(default)s; raise it for scripts much denser than English)")
    parser.add_argument("--max-chrf", type=float, default=DEFAULT_MAX_CHRF,
                        help="drop pairs whose other side has chrF (0-100) above this against the "
                             "English side, i.e. untranslated copies (default %(default)s)")


def run_cli(main, argv: list[str] | None) -> int:
    """Run ``main(argv)``, turning an OpticalError into ``error: ...`` and exit code 2."""
    try:
        main(argv)
    except OpticalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data_prep.clean", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="bitext TSV, english<TAB>other")
    parser.add_argument("--out", type=Path, required=True, help="cleaned TSV to write")
    add_clean_arguments(parser)
    args = parser.parse_args(argv)
    kept, dropped = clean_pairs(read_tsv(args.input), max_length_ratio=args.max_length_ratio,
                                max_chrf=args.max_chrf)
    write_tsv(kept, args.out)
    print(f"kept {len(kept)} pairs; dropped " + ", ".join(f"{k}={v}" for k, v in dropped.items()))


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
