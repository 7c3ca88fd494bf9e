"""Session-wide tiny models and data, built offline once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Tests never download: fail fast instead of hanging on a hub request.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tiny_models  # noqa: E402  (tests/ is on sys.path)
from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis profiles for the property tests that do not fix their own max_examples (the
# parser tests in test_parsers.py): "ci" is the default run; "fuzz" is the long run by hand,
# `HYPOTHESIS_PROFILE=fuzz pytest tests/test_parsers.py` (or `--hypothesis-profile fuzz`),
# FUZZ_EXAMPLES per test: the seven parser properties together try 70,000 inputs.
CI_EXAMPLES = 150
FUZZ_EXAMPLES = 10_000
settings.register_profile("ci", max_examples=CI_EXAMPLES, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def optical_cache(tmp_path_factory) -> Path:
    """Teacher-state and packaged-model caches live in the session's temp dir, not ~/.cache."""
    path = tmp_path_factory.mktemp("optical_cache")
    os.environ["OPTICAL_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_teacher_st(tiny_dir) -> Path:
    """English bi-encoder teacher: sentence-transformers folder, hidden 32."""
    return tiny_models.build_sentence_transformer(tiny_dir / "teacher_st", hidden=32, seed=1)


@pytest.fixture(scope="session")
def tiny_cross_encoder(tiny_dir) -> Path:
    return tiny_models.build_cross_encoder(tiny_dir / "cross_encoder", hidden=32, seed=2)


@pytest.fixture(scope="session")
def tiny_hf_teacher(tiny_dir) -> Path:
    return tiny_models.build_hf_encoder(tiny_dir / "hf_teacher", hidden=32, seed=3)


@pytest.fixture(scope="session")
def tiny_clip(tiny_dir) -> Path:
    return tiny_models.build_clip(tiny_dir / "clip", hidden=32, projection_dim=16, seed=4)


@pytest.fixture(scope="session")
def tiny_student(tiny_dir) -> Path:
    """Multilingual student stand-in: a plain HF encoder, hidden 24 (≠ teacher's 32)."""
    return tiny_models.build_hf_encoder(tiny_dir / "student", hidden=24, seed=5)


@pytest.fixture()
def bitext_tsv(tmp_path) -> Path:
    path = tmp_path / "pairs.tsv"
    shutil.copy(tiny_models.BITEXT_VI, path)
    return path
