"""Public bitext from the Hugging Face hub (needs a network) → cleaned TSV.

| source   | dataset id                                     | config        | layout |
|----------|------------------------------------------------|---------------|--------|
| opus100  | ``Helsinki-NLP/opus-100``                       | ``en-vi`` (the two codes sorted) | ``translation: {"en": ..., "vi": ...}``; splits train / validation / test |
| tatoeba  | ``sentence-transformers/parallel-sentences-tatoeba`` | ``en-vi`` | ``english``, ``non_english``; split train (dev for some pairs) |
| ted2020  | ``sentence-transformers/parallel-sentences-talks``   | ``en-vi`` | ``english``, ``non_english``; split train (dev for some pairs) |
| flores   | ``openlanguagedata/flores_plus`` (gated: accept the terms, ``huggingface-cli login``) | one config per language (``eng_Latn``, ``vie_Latn``) | ``id``, ``text``; splits dev / devtest; the two languages are joined on ``id`` |

``facebook/flores``' per-language layout (``id``, ``sentence``) and its old paired layout
(``sentence_eng_Latn``, ``sentence_vie_Latn`` in one row) are read too.

Loading (``load_*``) and converting (``*_pairs``) are separate so the conversion is tested
on in-memory ``datasets.Dataset`` objects without a network.

Run as ``python -m data_prep.download opus100 --lang vi --split train --out data/opus100_vi.tsv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from data_prep.clean import (
    DEFAULT_MAX_CHRF,
    DEFAULT_MAX_LENGTH_RATIO,
    add_clean_arguments,
    clean_pairs,
    run_cli,
    write_tsv,
)
from optical.errors import OpticalError

Pair = tuple[str, str]

OPUS100 = "Helsinki-NLP/opus-100"
TATOEBA = "sentence-transformers/parallel-sentences-tatoeba"
TED2020 = "sentence-transformers/parallel-sentences-talks"
FLORES = "openlanguagedata/flores_plus"

# FLORES-200 codes (ISO 639-3 + script) of the project's languages and common others;
# anything else is passed with --flores-code.
FLORES_CODES = {
    "en": "eng_Latn", "vi": "vie_Latn", "sw": "swh_Latn", "km": "khm_Khmr", "th": "tha_Thai",
    "lo": "lao_Laoo", "my": "mya_Mymr", "id": "ind_Latn", "tl": "tgl_Latn", "hi": "hin_Deva",
    "bn": "ben_Beng", "ne": "npi_Deva", "ta": "tam_Taml", "te": "tel_Telu", "ur": "urd_Arab",
    "am": "amh_Ethi", "ha": "hau_Latn", "yo": "yor_Latn", "ig": "ibo_Latn", "zu": "zul_Latn",
    "ar": "arb_Arab", "fa": "pes_Arab", "tr": "tur_Latn", "ru": "rus_Cyrl", "uk": "ukr_Cyrl",
    "zh": "zho_Hans", "ja": "jpn_Jpan", "ko": "kor_Hang", "fr": "fra_Latn", "de": "deu_Latn",
    "es": "spa_Latn", "pt": "por_Latn", "it": "ita_Latn",
}


def _require_columns(dataset, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise OpticalError(f"{what}: missing column(s) {', '.join(missing)} "
                           f"(found {', '.join(dataset.column_names)})")


def opus100_pairs(dataset, lang: str) -> list[Pair]:
    """OPUS-100 rows ``{"translation": {"en": ..., lang: ...}}`` → ``(english, other)``."""
    _require_columns(dataset, ["translation"], "opus-100")
    pairs = []
    for row in dataset["translation"]:
        if "en" not in row or lang not in row:
            raise OpticalError(f"opus-100: translation has keys {sorted(row)}, expected 'en' and "
                               f"'{lang}'")
        pairs.append((row["en"] or "", row[lang] or ""))
    return pairs


def english_non_english_pairs(dataset) -> list[Pair]:
    """sentence-transformers ``parallel-sentences-*`` rows (``english``, ``non_english``)."""
    _require_columns(dataset, ["english", "non_english"], "parallel-sentences")
    return [(e or "", o or "") for e, o in zip(dataset["english"], dataset["non_english"])]


def _flores_text_column(dataset) -> str:
    for column in ("text", "sentence"):
        if column in dataset.column_names:
            return column
    raise OpticalError(f"flores: no 'text' or 'sentence' column (found "
                       f"{', '.join(dataset.column_names)})")


def flores_pairs(english, other=None, *, code: str = "vie_Latn") -> list[Pair]:
    """FLORES rows → pairs: two per-language datasets joined on ``id``, or one paired dataset
    with ``sentence_eng_Latn`` / ``sentence_<code>`` columns (``other`` None)."""
    if other is None:
        columns = ["sentence_eng_Latn", f"sentence_{code}"]
        _require_columns(english, columns, "flores (paired layout)")
        return [(e or "", o or "") for e, o in zip(english[columns[0]], english[columns[1]])]
    _require_columns(english, ["id"], "flores (English)")
    _require_columns(other, ["id"], f"flores ({code})")
    by_id = dict(zip(other["id"], other[_flores_text_column(other)]))
    en_text = english[_flores_text_column(english)]
    return [(e or "", by_id[i] or "") for i, e in zip(english["id"], en_text) if i in by_id]


def _load(name: str, config: str, split: str):
    try:
        from datasets import load_dataset
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise OpticalError("the 'datasets' package is needed for downloads") from None
    try:
        return load_dataset(name, config, split=split)
    except Exception as err:  # network, gated access, unknown config: one line for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OpticalError(f"{name} [{config}] split {split}: cannot load: {first}") from None


def load_opus100(lang: str, split: str) -> list[Pair]:
    config = "-".join(sorted(["en", lang]))
    return opus100_pairs(_load(OPUS100, config, split), lang)


def load_tatoeba(lang: str, split: str) -> list[Pair]:
    return english_non_english_pairs(_load(TATOEBA, f"en-{lang}", split))


def load_ted2020(lang: str, split: str) -> list[Pair]:
    return english_non_english_pairs(_load(TED2020, f"en-{lang}", split))


def load_flores(lang: str, split: str, code: str | None = None) -> list[Pair]:
    code = code or FLORES_CODES.get(lang)
    if code is None:
        raise OpticalError(f"flores: no FLORES-200 code known for '{lang}'; pass --flores-code")
    return flores_pairs(_load(FLORES, "eng_Latn", split), _load(FLORES, code, split), code=code)


SOURCES: dict[str, tuple[Callable[..., list[Pair]], str]] = {
    "opus100": (load_opus100, "train"),
    "tatoeba": (load_tatoeba, "train"),
    "ted2020": (load_ted2020, "train"),
    "flores": (load_flores, "devtest"),
}


def pairs_to_tsv(pairs: Iterable[Pair], out: str | Path, *,
                 max_length_ratio: float = DEFAULT_MAX_LENGTH_RATIO,
                 max_chrf: float = DEFAULT_MAX_CHRF, max_pairs: int | None = None) -> dict:
    """Clean pairs and write them as bitext TSV; return counts."""
    pairs = list(pairs)
    kept, dropped = clean_pairs(pairs, max_length_ratio=max_length_ratio, max_chrf=max_chrf)
    if max_pairs is not None:
        kept = kept[:max_pairs]
    write_tsv(kept, out)
    return {"candidate_pairs": len(pairs), "pairs": len(kept), "dropped": dict(dropped)}


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data_prep.download",
                                     description="Download public bitext with `datasets` and "
                                                 "write cleaned english<TAB>other TSV.")
    parser.add_argument("source", choices=sorted(SOURCES), help="which corpus")
    parser.add_argument("--lang", required=True, help="the other language's ISO 639-1 code, e.g. vi")
    parser.add_argument("--split", help="dataset split (default: train; devtest for flores)")
    parser.add_argument("--out", type=Path, required=True, help="bitext TSV to write")
    parser.add_argument("--flores-code", help="FLORES-200 code when --lang is not in the table")
    parser.add_argument("--max-pairs", type=int, help="keep at most this many cleaned pairs")
    parser.add_argument("--stats", type=Path, help="also write counts as JSON here")
    add_clean_arguments(parser)
    args = parser.parse_args(argv)
    loader, default_split = SOURCES[args.source]
    split = args.split or default_split
    if args.source == "flores":
        pairs = loader(args.lang, split, args.flores_code)
    else:
        pairs = loader(args.lang, split)
    stats = pairs_to_tsv(pairs, args.out, max_length_ratio=args.max_length_ratio,
                         max_chrf=args.max_chrf, max_pairs=args.max_pairs)
    if args.stats:
        args.stats.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    print(f"{args.source} {args.lang} {split}: {stats['pairs']} pairs -> {args.out}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
