"""User-facing errors.

Every problem a user can cause (a bad recipe key, a malformed bitext line, a missing
file) is raised as :class:`OpticalError` with a one-line message that names the file,
the line and the key. The CLI prints ``error: <message>`` and exits with code 2;
nothing user-caused ever reaches the user as a traceback.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


class OpticalError(Exception):
    """An error caused by input the user can fix; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def os_error_line(err: OSError, path: str | Path | None = None) -> str:
    """`<path>: <reason>` for an OSError (read-only folder, full disk, a file where a folder
    should be), naming the file the system names, else `path`."""
    name = err.filename if err.filename is not None else path
    reason = err.strerror or str(err) or type(err).__name__
    return f"{name}: {reason}" if name is not None else reason


@contextmanager
def writing(path: str | Path):
    """Turn a failed write under `path` into one OpticalError line naming the path: an OSError,
    or safetensors' SafetensorError (which wraps the OSError of a full disk)."""
    try:
        yield
    except OSError as err:
        raise OpticalError(f"cannot write {os_error_line(err, path)}") from None
    except Exception as err:
        if type(err).__name__ != "SafetensorError":
            raise
        raise OpticalError(f"cannot write {path}: {str(err).splitlines()[0] if str(err) else 'SafetensorError'}") from None


def where(path: str | Path | None, line: int | None = None, key: str | None = None) -> str:
    """Format a location prefix: ``file:line: key:`` (parts that are None are left out)."""
    parts = []
    if path is not None:
        parts.append(f"{path}:{line}" if line is not None else str(path))
    if key:
        parts.append(key)
    return ": ".join(parts)
