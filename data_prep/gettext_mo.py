"""gettext catalogues (``.mo``) → English-to-X bitext.

Free software translates its messages with gettext; a system's
``/usr/share/locale/<lang>/LC_MESSAGES/*.mo`` files are thousands of short, human
translated UI strings (msgid is English by gettext convention, msgstr the translation).

- the header (catalogue metadata) is not a message; a message context (``msgctxt``) is dropped;
- plurals: the English singular pairs with the first form and the English plural with
  the second form when the language has one (languages with a single form, like
  Vietnamese, pair only the singular);
- empty translations are skipped (counted as ``untranslated_entry``);
- menu accelerators (``_File``, ``&File``, ``Tệp (_F)``) are removed unless
  ``--keep-accelerators``; then every pair goes through :mod:`data_prep.clean`.

Run as ``python -m data_prep.gettext_mo --lang vi --out data/gettext_vi.tsv`` (reads
``/usr/share/locale/vi/LC_MESSAGES``) or with ``.mo`` files / folders as arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from collections import Counter
from dataclasses import dataclass
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

# "Tệp (_F)" / "ファイル(&F)": a translation's accelerator appended in brackets.
_BRACKET_ACCEL = re.compile(r"\s*[(（][_&][A-Za-z0-9][)）]")
# "_File": an underscore starting a word; "&File" but not the entity "&amp;".
_UNDERSCORE_ACCEL = re.compile(r"(?<!\w)_(?=\w)")
_AMPERSAND_ACCEL = re.compile(r"&(?=\w)(?!#?\w+;)")


@dataclass
class MoEntry:
    """One catalogue message. ``translations`` has one string per plural form."""

    msgid: str
    msgid_plural: str | None
    translations: list[str]
    context: str | None = None


def read_mo(path: str | Path) -> list[MoEntry]:
    """Parse a GNU ``.mo`` file (either byte order) with polib. The header (catalogue
    metadata) is not an entry. The stdlib's ``gettext.GNUTranslations`` reads ``.mo`` too,
    but keeps no English plural (``msgid_plural``), which the plural pairs need."""
    import polib

    path = Path(path)
    if not path.is_file():
        raise OpticalError(f"{path}: no such file")
    try:
        catalogue = polib.mofile(str(path))
    except OSError as err:  # polib says "magic number is incorrect" for what is not a .mo file
        raise OpticalError(f"{path}: not a .mo file ({str(err).strip(' !') or 'unreadable'})") from None
    except (struct.error, ValueError, IndexError, LookupError, UnicodeDecodeError) as err:
        raise OpticalError(f"{path}: corrupt .mo file ({type(err).__name__}: {err})") from None
    entries = []
    for entry in catalogue:
        if entry.msgid_plural:
            forms = [entry.msgstr_plural[i] for i in sorted(entry.msgstr_plural)]
        else:
            forms = [entry.msgstr]
        entries.append(MoEntry(entry.msgid, entry.msgid_plural or None, forms, entry.msgctxt or None))
    return entries


def strip_accelerators(text: str) -> str:
    """Remove GTK/Qt menu accelerator marks, which are not part of the language."""
    text = _BRACKET_ACCEL.sub("", text)
    text = _UNDERSCORE_ACCEL.sub("", text)
    return _AMPERSAND_ACCEL.sub("", text)


def entry_pairs(entries: list[MoEntry], *, accelerators: bool = False
                ) -> tuple[list[tuple[str, str]], Counter]:
    """Raw ``(english, other)`` pairs of catalogue entries, and skips per reason."""
    skipped = Counter(untranslated_entry=0)
    pairs = []
    for entry in entries:
        if not entry.msgid.strip():
            skipped["empty_msgid"] += 1
            continue
        candidates = [(entry.msgid, entry.translations[0] if entry.translations else "")]
        if entry.msgid_plural is not None and len(entry.translations) > 1:
            candidates.append((entry.msgid_plural, entry.translations[1]))
        for english, other in candidates:
            if not other.strip():
                skipped["untranslated_entry"] += 1
                continue
            if not accelerators:
                english, other = strip_accelerators(english), strip_accelerators(other)
            pairs.append((english, other))
    return pairs, skipped


def find_mo_files(inputs: list[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively) into a sorted list of ``.mo`` files."""
    files: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files.extend(sorted(item.rglob("*.mo")))
        elif item.is_file():
            files.append(item)
        else:
            raise OpticalError(f"{item}: no such file or folder")
    if not files:
        raise OpticalError(f"no .mo files in {', '.join(str(i) for i in inputs)}")
    return files


def mo_to_bitext(inputs: list[str | Path], *, accelerators: bool = False,
                 max_length_ratio: float = DEFAULT_MAX_LENGTH_RATIO,
                 max_chrf: float = DEFAULT_MAX_CHRF) -> tuple[list[tuple[str, str]], dict]:
    """Read, pair and clean all catalogues; return the kept pairs and stats."""
    files = find_mo_files(inputs)
    raw: list[tuple[str, str]] = []
    skipped: Counter = Counter()
    for path in files:
        pairs, skips = entry_pairs(read_mo(path), accelerators=accelerators)
        raw.extend(pairs)
        skipped.update(skips)
    kept, dropped = clean_pairs(raw, max_length_ratio=max_length_ratio, max_chrf=max_chrf)
    stats = {"files": len(files), "candidate_pairs": len(raw), "pairs": len(kept),
             "dropped": {**dict(skipped), **dict(dropped)}}
    return kept, stats


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data_prep.gettext_mo",
                                     description="gettext .mo catalogues -> english<TAB>other TSV.")
    parser.add_argument("inputs", nargs="*", help=".mo files or folders (default: the system "
                                                  "locale folder of --lang)")
    parser.add_argument("--lang", help="read <locale-dir>/<lang>/LC_MESSAGES/*.mo")
    parser.add_argument("--locale-dir", type=Path, default=Path("/usr/share/locale"),
                        help="system locale folder (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="bitext TSV to write")
    parser.add_argument("--stats", type=Path, help="also write counts as JSON here")
    parser.add_argument("--keep-accelerators", action="store_true",
                        help="keep menu accelerator marks such as _File")
    add_clean_arguments(parser)
    args = parser.parse_args(argv)
    inputs = list(args.inputs)
    if not inputs:
        if not args.lang:
            raise OpticalError("give .mo files/folders or --lang")
        inputs = [args.locale_dir / args.lang / "LC_MESSAGES"]
    kept, stats = mo_to_bitext(inputs, accelerators=args.keep_accelerators,
                               max_length_ratio=args.max_length_ratio, max_chrf=args.max_chrf)
    write_tsv(kept, args.out)
    if args.stats:
        args.stats.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    print(f"{stats['files']} catalogues -> {stats['pairs']} pairs; dropped "
          + ", ".join(f"{k}={v}" for k, v in stats["dropped"].items()))


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
