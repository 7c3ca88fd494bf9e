"""Files on disk: the cache folder, cache keys, and writes that are atomic.

Every file or folder optical writes goes through here (checkpoints, the student, the
teacher store, the warm-start states, the embedding cache, packaged models), so each has
the same guarantees: it is written under a unique temporary name beside its target and
renamed into place (a kill leaves the old version or none, never half a file; two
processes never share a temporary name), and it gets the permissions a plain ``open``
would give, not the private ones of ``tempfile``.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_file(folder / "vectors.bin") as tmp:
    ...     _ = tmp.write_bytes(b"0123")
    >>> sorted(p.name for p in folder.iterdir())
    ['vectors.bin']
    >>> cache_key("model@1", ["a", "b"]) == cache_key("model@1", ["a", "b"]) != cache_key("model@1", ["ab"])
    True
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from optical.errors import writing


def default_cache_dir() -> Path:
    """`$OPTICAL_CACHE`, else `~/.cache/optical`: prepared models, teacher states, embeddings."""
    return Path(os.environ.get("OPTICAL_CACHE", Path.home() / ".cache" / "optical"))


def cache_key(*parts: str | Iterable[str], length: int = 24) -> str:
    """Hex sha256 prefix naming a cache entry.

    Each part is a string or an iterable of strings (sentences, ``id\\ttext`` lines), hashed
    item by item so a corpus is never joined in memory; separators keep ``("ab", "c")`` and
    ``("a", "bc")`` apart. Put everything the cached value depends on into the parts.
    """
    digest = hashlib.sha256()
    for part in parts:
        for item in ((part,) if isinstance(part, str) else part):
            digest.update(item.encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
        digest.update(b"\x01")
    return digest.hexdigest()[:length]


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask sets it,
    briefly, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(path: str | Path) -> None:
    """Give a file or folder, and everything in a folder, the mode a plain open/mkdir would:
    0666/0777 less the umask. tempfile.mkstemp/mkdtemp and safetensors' save_file make them
    private (0600/0700), so teammates could not read a run they can read everything else of."""
    mask = current_umask()
    paths = [Path(path)]
    if paths[0].is_dir() and not paths[0].is_symlink():
        paths += sorted(Path(path).rglob("*"))
    for item in paths:
        if item.is_symlink():
            continue
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def temporary_sibling(target: Path, folder: bool = False) -> Path:
    """A new, uniquely named ``.<name>.*.tmp`` file (or folder) beside ``target``."""
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; when the block ends without an
    exception it is renamed onto ``path``. On any failure (a full disk included) nothing is
    left behind and ``path`` keeps its old content."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        with writing(path):
            yield tmp
            umask_mode(tmp)
            os.replace(tmp, path)
    finally:
        _remove(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_file` for a folder: fill the yielded empty folder; it then replaces
    ``path`` (an old folder there is moved aside first and removed after the rename)."""
    path = Path(path)
    tmp = temporary_sibling(path, folder=True)
    old = path.parent / f".{path.name}.old-{os.getpid()}.tmp"
    try:
        with writing(path):
            yield tmp
            umask_mode(tmp)
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
    finally:
        _remove(tmp)
        _remove(old)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
