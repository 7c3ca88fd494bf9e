"""JSON Lines input with errors that name the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from optical.errors import OpticalError, where


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line. A missing file, a line that is
    not a JSON object or lacks a `required` key raises OpticalError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise OpticalError(f"{path}: file not found")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise OpticalError(f"{where(path, number)}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise OpticalError(f"{where(path, number)}: expected a JSON object")
            for key in required:
                if key not in record:
                    raise OpticalError(f"{where(path, number, key)}: missing field")
            yield number, record
