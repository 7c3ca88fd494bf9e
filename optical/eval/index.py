"""faiss indexes over L2-normalised embeddings: build, search (batched), save, load.

Scores are inner products (= cosine for normalised vectors). Kinds:

- ``flat``: exact search (IndexFlatIP), the default;
- ``ivf``: inverted lists, ``nlist`` centroids trained on the corpus, ``nprobe`` lists
  visited per query (faster, approximate; for corpora of ~1M+);
- ``hnsw``: graph index, ``M`` links per node, ``efSearch`` candidates per query.

A spec string selects one: ``flat``, ``ivf:nlist=1024,nprobe=32``, ``hnsw:M=32,efSearch=128``,
or any faiss index-factory string as ``faiss:FACTORY`` with optional search parameters after
a ``;`` (``faiss:IVF4096,PQ32;nprobe=64``). Every kind is built by ``faiss.index_factory``
(inner-product metric) and searched on the GPUs when faiss sees any (faiss-gpu installed
instead of faiss-cpu; HNSW stays on the CPU, which faiss-gpu does not support).

    >>> import numpy as np
    >>> vectors = np.eye(4, dtype=np.float32)
    >>> scores, ids = search(build_index(vectors, "hnsw:M=8"), vectors[[2]], k=1)
    >>> int(ids[0, 0]), float(scores[0, 0])
    (2, 1.0)
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
    factory: str = ""  # kind "faiss": the index-factory string
    params: str = ""  # kind "faiss": faiss ParameterSpace settings, e.g. "nprobe=64"

    def __str__(self) -> str:
        if self.kind == "ivf":
            return f"ivf:nlist={self.nlist},nprobe={self.nprobe}"
        if self.kind == "hnsw":
            return f"hnsw:M={self.M},efSearch={self.efSearch}"
        if self.kind == "faiss":
            return f"faiss:{self.factory}" + (f";{self.params}" if self.params else "")
        return "flat"

    def factory_string(self, n: int) -> str:
        """The faiss index-factory string for `n` vectors."""
        if self.kind == "ivf":
            # faiss needs at least one training point per centroid; small corpora get fewer lists
            return f"IVF{max(1, min(self.nlist, n))},Flat"
        if self.kind == "hnsw":
            return f"HNSW{self.M},Flat"
        return self.factory if self.kind == "faiss" else "Flat"

    def search_parameters(self, n: int) -> str:
        """faiss ParameterSpace settings applied after building or loading."""
        if self.kind == "ivf":
            return f"nprobe={min(self.nprobe, max(1, min(self.nlist, n)))}"
        if self.kind == "hnsw":
            return f"efSearch={self.efSearch}"
        return self.params


_PARAMS = {"flat": (), "ivf": ("nlist", "nprobe"), "hnsw": ("M", "efSearch")}
# faiss keeps these in a C int, and allocates per query in proportion to efSearch and per
# node to M: larger values only exhaust memory
LIMITS = {"nlist": 2**31 - 1, "nprobe": 2**31 - 1, "M": 1024, "efSearch": 1_000_000}


def parse_index_spec(spec: str | IndexSpec | None) -> IndexSpec:
    """``"ivf:nlist=256,nprobe=16"`` → IndexSpec; unknown kinds or keys raise OpticalError."""
    if spec is None or isinstance(spec, IndexSpec):
        return spec or IndexSpec()
    kind, _, rest = spec.strip().partition(":")
    if kind == "faiss":
        factory, _, params = rest.partition(";")
        if not factory.strip():
            raise OpticalError(f"--index {spec}: give a faiss index-factory string, e.g. faiss:IVF256,Flat")
        return IndexSpec(kind="faiss", factory=factory.strip(), params=params.strip())
    if kind not in _PARAMS:
        raise OpticalError(f"--index {spec}: unknown index kind {kind!r} (flat, ivf, hnsw, faiss:FACTORY)")
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
    try:
        index = faiss.index_factory(dim, spec.factory_string(n), faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            index.train(vectors)
    except RuntimeError as err:  # a bad factory string, or too few vectors to train it
        raise OpticalError(f"--index {spec}: faiss cannot build it for {n} vectors of dimension {dim}: "
                           f"{_faiss_reason(err)}") from None
    _set_search_parameters(index, spec, n)
    index.add(vectors)
    return index


def _faiss_reason(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = next((line for line in lines if line.lower().startswith("error")), lines[-1] if lines else "")
    return reason[:200]


def _set_search_parameters(index, spec: IndexSpec, n: int) -> None:
    import faiss

    params = spec.search_parameters(n)
    if not params:
        return
    try:
        faiss.ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as err:
        raise OpticalError(f"--index {spec}: faiss rejects the search parameters {params!r}: "
                           f"{_faiss_reason(err)}") from None


def _on_gpus(index):
    """The index copied to every GPU faiss sees (faiss-gpu), else unchanged."""
    import faiss

    if getattr(faiss, "get_num_gpus", lambda: 0)() < 1 or isinstance(index, faiss.IndexHNSW):
        return index
    return faiss.index_cpu_to_all_gpus(index)


def search(index, queries: np.ndarray, k: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` for each query ``[q, dim]`` → (scores ``[q, k]``, row ids ``[q, k]``).

    Batched so that the ``[batch, k]`` result buffers stay small on huge query sets.
    Missing hits (approximate indexes can return fewer than k) have id -1.
    """
    vectors = _as_matrix(queries)
    index = _on_gpus(index)
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
        _set_search_parameters(index, parse_index_spec(spec), index.ntotal)
    return index
