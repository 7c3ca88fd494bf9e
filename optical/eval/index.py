"""faiss indexes over L2-normalised embeddings: build, search (batched), save, load.

Scores are inner products (= cosine for normalised vectors). Kinds:

- ``flat``: exact search (IndexFlatIP), the default;
- ``ivf``: inverted lists, ``nlist`` centroids trained on the corpus, ``nprobe`` lists
  visited per query (faster, approximate; for corpora of ~1M+);
- ``hnsw``: graph index, ``M`` links per node, ``efSearch`` candidates per query.

A spec string selects one: ``flat``, ``ivf:nlist=1024,nprobe=32``, ``hnsw:M=32,efSearch=128``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optical.errors import OpticalError


@dataclass(frozen=True)
class IndexSpec:
    kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 32
    M: int = 32
    efSearch: int = 128

    def __str__(self) -> str:
        if self.kind == "ivf":
            return f"ivf:nlist={self.nlist},nprobe={self.nprobe}"
        if self.kind == "hnsw":
            return f"hnsw:M={self.M},efSearch={self.efSearch}"
        return "flat"


_PARAMS = {"flat": (), "ivf": ("nlist", "nprobe"), "hnsw": ("M", "efSearch")}
# faiss keeps these in a C int, and allocates per query in proportion to efSearch and per
# node to M: larger values only exhaust memory
LIMITS = {"nlist": 2**31 - 1, "nprobe": 2**31 - 1, "M": 1024, "efSearch": 1_000_000}


def parse_index_spec(spec: str | IndexSpec | None) -> IndexSpec:
    """``"ivf:nlist=256,nprobe=16"`` → IndexSpec; unknown kinds or keys raise OpticalError."""
    if spec is None or isinstance(spec, IndexSpec):
        return spec or IndexSpec()
    kind, _, rest = spec.strip().partition(":")
    if kind not in _PARAMS:
        raise OpticalError(f"--index {spec}: unknown index kind {kind!r} (flat, ivf, hnsw)")
    values: dict[str, int] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key == "ef":
            key = "efSearch"
        if key not in _PARAMS[kind]:
            raise OpticalError(f"--index {spec}: {kind} takes {', '.join(_PARAMS[kind]) or 'no options'}, "
                               f"not {key!r}")
        try:
            values[key] = int(value)
        except ValueError:
            raise OpticalError(f"--index {spec}: {key} must be an integer") from None
        if not 0 < values[key] <= LIMITS[key]:
            raise OpticalError(f"--index {spec}: {key} must be between 1 and {LIMITS[key]}")
    return IndexSpec(kind=kind, **values)


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)


def build_index(embeddings: np.ndarray, spec: str | IndexSpec | None = None):
    """Index ``embeddings`` ``[n, dim]`` (float32, normalised); row i gets id i."""
    import faiss

    spec = parse_index_spec(spec)
    vectors = _as_matrix(embeddings)
    n, dim = vectors.shape
    if n == 0:
        raise OpticalError("cannot index an empty corpus")
    if spec.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.kind == "ivf":
        # faiss needs at least one training point per centroid; small corpora get fewer lists.
        nlist = max(1, min(spec.nlist, n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(spec.nprobe, nlist)
    else:
        index = faiss.IndexHNSWFlat(dim, spec.M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = spec.efSearch
    index.add(vectors)
    return index


def search(index, queries: np.ndarray, k: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` for each query ``[q, dim]`` → (scores ``[q, k]``, row ids ``[q, k]``).

    Batched so that the ``[batch, k]`` result buffers stay small on huge query sets.
    Missing hits (approximate indexes can return fewer than k) have id -1.
    """
    vectors = _as_matrix(queries)
    k = max(1, min(k, index.ntotal))
    scores = np.empty((len(vectors), k), dtype=np.float32)
    ids = np.empty((len(vectors), k), dtype=np.int64)
    for start in range(0, len(vectors), batch_size):
        block = vectors[start:start + batch_size]
        scores[start:start + len(block)], ids[start:start + len(block)] = index.search(block, k)
    return scores, ids


def save_index(index, path: str | Path) -> Path:
    """Write the index to ``path`` (faiss binary format), atomically."""
    import faiss

    from optical.files import atomic_file

    with atomic_file(path) as tmp:
        faiss.write_index(index, str(tmp))
    return Path(path)


def load_index(path: str | Path, spec: str | IndexSpec | None = None):
    """Read an index written by :func:`save_index`; ``spec`` re-applies nprobe / efSearch."""
    import faiss

    path = Path(path)
    if not path.is_file():
        raise OpticalError(f"{path}: index file not found")
    index = faiss.read_index(str(path))
    if spec is not None:
        spec = parse_index_spec(spec)
        if spec.kind == "ivf":
            faiss.extract_index_ivf(index).nprobe = spec.nprobe
        elif spec.kind == "hnsw":
            index.hnsw.efSearch = spec.efSearch
    return index
