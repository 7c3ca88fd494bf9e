"""JSON Lines (and other line-based text) input with errors that name the file and the line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from optical.errors import OpticalError, where

# A JSON escape of a UTF-16 surrogate (\ud800-\udfff): the only way a lone one gets into a str
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) of a UTF-8 text file; a line that is not UTF-8 raises
    OpticalError naming file and line (not a UnicodeDecodeError from deep inside a loop)."""
    path = Path(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise OpticalError(f"{where(path, number)}: not valid UTF-8 (byte {err.start + 1} of the line); "
                                   f"convert the file to UTF-8") from None


def parse_json_line(line: str) -> Any:
    """`json.loads` of one line; ValueError with a short reason when it is not usable JSON
    (invalid, nested too deeply, or holding a lone surrogate that no encoder can write)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err.msg})") from None
    except RecursionError:
        raise ValueError("invalid JSON (nested too deeply)") from None
    if lone_surrogate(line, value):
        raise ValueError("a \\u escape is a lone surrogate (not a character)")
    return value


def lone_surrogate(text: str, value: Any) -> bool:
    """True when `value`, parsed from JSON `text`, holds a lone surrogate (from a \\udXXX
    escape): such a string cannot be written as UTF-8, so tokenizers and files choke on it."""
    if not _SURROGATE_ESCAPE.search(text):
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line. A missing file, a line that is
    not a JSON object or lacks a `required` key raises OpticalError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise OpticalError(f"{path}: file not found")
    for number, line in text_lines(path):
        if not line.strip():
            continue
        try:
            record = parse_json_line(line)
        except ValueError as err:
            raise OpticalError(f"{where(path, number)}: {err}") from None
        if not isinstance(record, dict):
            raise OpticalError(f"{where(path, number)}: expected a JSON object")
        for key in required:
            if key not in record:
                raise OpticalError(f"{where(path, number, key)}: missing field")
        yield number, record
