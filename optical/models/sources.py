"""Where models come from: a local folder, a packaged offline model, or a hub id."""

from __future__ import annotations

import hashlib
from pathlib import Path

from optical.errors import OpticalError
from optical.files import default_cache_dir

PACKAGED_PREFIX = "packaged:"


def resolve_model(spec: str, cache_dir: Path | None = None) -> str:
    """Turn a model spec into something `from_pretrained` / `SentenceTransformer` accept.

    - an existing local path is returned as is;
    - `packaged:NAME` is materialised once into the cache and its folder returned;
    - anything else is taken as a Hugging Face hub id and returned unchanged.
    """
    if not spec or not isinstance(spec, str):
        raise OpticalError(f"model spec must be a non-empty string, got {spec!r}")
    if spec.startswith(PACKAGED_PREFIX):
        from optical.models import packaged

        return str(packaged.prepare(spec[len(PACKAGED_PREFIX):], cache_dir or default_cache_dir()))
    path = Path(spec).expanduser()
    if path.exists():
        return str(path)
    # "runs/vi" when runs/ is here is a mistyped local path, not a hub id to download
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or (path.parent != Path(".") and path.parent.is_dir()):
        raise OpticalError(f"model path does not exist: {spec}")
    return spec


def folder_identity(path: str | Path) -> str:
    """Hash of every file's relative path, size and mtime under ``path`` (or of one file).

    Cheap even for GB-sized weights, and changes whenever a checkpoint is rewritten. A
    folder's top-level README.md (the model card, rewritten by `optical card` and after
    `optical eval RUN_DIR`) changes no embedding and is left out.
    """
    path = Path(path)
    digest = hashlib.sha256(str(path.resolve()).encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                 if p.is_file() and p != path / "README.md")
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if file != path else file.name}|{stat.st_size}|"
                      f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
