"""faiss indexes: exact flat search, IVF/HNSW agreement, save/load, spec parsing."""

from __future__ import annotations

import numpy as np
import pytest

from optical.errors import OpticalError
from optical.eval.index import IndexSpec, build_index, load_index, parse_index_spec, save_index, search


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(500, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:40] + 0.1 * rng.normal(size=(40, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return docs, queries


def test_flat_is_exact_and_batched(vectors):
    docs, queries = vectors
    scores, ids = search(build_index(docs), queries, k=5, batch_size=7)
    brute = queries @ docs.T
    expected = np.argsort(-brute, axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, axis=1), rtol=1e-5)


def test_ivf_with_all_lists_matches_flat(vectors):
    docs, queries = vectors
    _, flat_ids = search(build_index(docs), queries, k=10)
    _, ivf_ids = search(build_index(docs, "ivf:nlist=8,nprobe=8"), queries, k=10)
    np.testing.assert_array_equal(ivf_ids, flat_ids)


def test_approximate_indexes_agree_on_top1(vectors):
    docs, queries = vectors
    _, flat_ids = search(build_index(docs), queries, k=1)
    for spec in ("ivf:nlist=8,nprobe=4", "hnsw:M=16,efSearch=64"):
        _, ids = search(build_index(docs, spec), queries, k=1)
        assert (ids[:, 0] == flat_ids[:, 0]).mean() >= 0.9, spec


@pytest.mark.parametrize("spec", ["flat", "ivf:nlist=8,nprobe=3", "hnsw:M=8,efSearch=32"])
def test_save_load_round_trip(tmp_path, vectors, spec):
    docs, queries = vectors
    index = build_index(docs, spec)
    path = save_index(index, tmp_path / "sub" / "docs.faiss")
    loaded = load_index(path, spec)
    a, ia = search(index, queries, k=5)
    b, ib = search(loaded, queries, k=5)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(a, b)


def test_k_larger_than_corpus(vectors):
    docs, queries = vectors
    scores, ids = search(build_index(docs[:3]), queries, k=100)
    assert ids.shape == (40, 3) and set(ids[0]) == {0, 1, 2}


def test_spec_parsing():
    assert parse_index_spec("ivf:nlist=64,nprobe=4") == IndexSpec("ivf", nlist=64, nprobe=4)
    assert parse_index_spec("hnsw:M=8,ef=40") == IndexSpec("hnsw", M=8, efSearch=40)
    assert str(parse_index_spec("flat")) == "flat"
    for bad in ("lsh", "ivf:M=3", "hnsw:M=x", "ivf:nlist=0"):
        with pytest.raises(OpticalError, match="--index"):
            parse_index_spec(bad)
    with pytest.raises(OpticalError, match="not found"):
        load_index("/nonexistent/x.faiss")


def test_faiss_factory_strings_build_through_index_factory(vectors, tmp_path):
    docs, queries = vectors
    _, flat_ids = search(build_index(docs), queries, k=10)
    spec = parse_index_spec("faiss:IVF8,Flat;nprobe=8")  # every list visited: exact
    assert spec == IndexSpec("faiss", factory="IVF8,Flat", params="nprobe=8") and str(spec) == "faiss:IVF8,Flat;nprobe=8"
    _, ids = search(build_index(docs, spec), queries, k=10)
    np.testing.assert_array_equal(ids, flat_ids)
    # a quantised index: approximate, still mostly right, and cached like the others
    pq = build_index(docs, "faiss:PQ8")
    _, pq_ids = search(load_index(save_index(pq, tmp_path / "pq.faiss"), "faiss:PQ8"), queries, k=1)
    assert (pq_ids[:, 0] == flat_ids[:, 0]).mean() >= 0.5
    for bad, reason in (("faiss:", "index-factory string"), ("faiss:NoSuchIndex", "faiss cannot build it"),
                        ("faiss:IVF8,Flat;nprobe=oops", "search parameters")):
        with pytest.raises(OpticalError, match=reason) as err:
            build_index(docs, bad)
        assert "\n" not in str(err.value)


def test_search_moves_flat_and_ivf_to_the_gpus_faiss_sees(vectors, monkeypatch):
    """With faiss-gpu (here simulated) flat and IVF indexes are searched on the GPUs; HNSW,
    which faiss-gpu lacks, stays on the CPU."""
    import faiss

    moved = []

    def to_gpus(index):
        moved.append(type(index).__name__)
        return index  # the CPU index stands in for its GPU copy

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpus, raising=False)
    docs, queries = vectors
    for spec in ("flat", "ivf:nlist=8,nprobe=8", "hnsw:M=8"):
        search(build_index(docs, spec), queries, k=3)
    assert moved == ["IndexFlat", "IndexIVFFlat"]
