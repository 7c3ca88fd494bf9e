"""User-facing errors.

Every problem a user can cause (a bad recipe key, a malformed bitext line, a missing
file) is raised as :class:`OpticalError` with a one-line message that names the file,
the line and the key. The CLI prints ``error: <message>`` and exits with code 2;
nothing user-caused ever reaches the user as a traceback.
"""

from __future__ import annotations

from pathlib import Path


class OpticalError(Exception):
    """An error caused by input the user can fix; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def where(path: str | Path | None, line: int | None = None, key: str | None = None) -> str:
    """Format a location prefix: ``file:line: key:`` (parts that are None are left out)."""
    parts = []
    if path is not None:
        parts.append(f"{path}:{line}" if line is not None else str(path))
    if key:
        parts.append(key)
    return ": ".join(parts)
