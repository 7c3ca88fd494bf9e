"""Query and document encoders for evaluation, and the on-disk corpus embedding cache.

An encoder is anything with ``encode(texts, batch_size, show_progress) -> [n, dim]``
float32 and a ``name``; here each also carries ``identity``, a string that changes
whenever its weights change (the embedding cache key).

Encoder specs (``--query-encoder`` / ``--doc-encoder``): ``student`` (the run's student),
``teacher`` (the run's teacher, from ``recipe.yaml``, or ``--teacher``), or any model
spec that :func:`optical.models.sources.resolve_model` accepts (a sentence-transformers
folder, a hub id, ``packaged:NAME``), so baselines go through the same code; or a weighted
sum of those, ``student+0.3*teacher`` (:mod:`optical.eval.mixture`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optical.errors import OpticalError
from optical.eval.mixture import MixtureEncoder, parse_mixture
from optical.files import atomic_file, cache_key
from optical.models.sources import folder_identity, resolve_model
from optical.recipe import TeacherConfig
from optical.run_dir import is_run_dir, load_run


def model_identity(spec: str, resolved: str) -> str:
    """``spec@hash`` for local folders; the hub id itself otherwise (a revision pins it)."""
    return f"{spec}@{folder_identity(resolved)}" if Path(resolved).exists() else spec


class SentenceTransformerEncoder:
    """A sentence-transformers model; ``role`` picks its query or document prompt, if any."""

    def __init__(self, spec: str, role: str = "document", max_length: int | None = None):
        from optical.models.sources import resolve_model
        from optical.models.student import load_sentence_transformer

        resolved = resolve_model(spec)
        try:
            self.model = load_sentence_transformer(resolved)
        except OSError as err:
            raise OpticalError(f"cannot load sentence-transformers model {spec!r}: "
                               f"{str(err).splitlines()[0]}") from None
        if max_length:
            self.model.max_seq_length = max_length
        if self.model.device.type == "cuda":
            self.model.half()  # fp16 halves memory and time on GPU; CPUs gain nothing from it
        self.role = role
        self.name = spec
        self.identity = model_identity(spec, resolved)

    def with_role(self, role: str) -> "SentenceTransformerEncoder":
        """Same weights, other side (shares the loaded model)."""
        twin = object.__new__(SentenceTransformerEncoder)
        twin.__dict__.update(self.__dict__, role=role)
        return twin

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        encode = self.model.encode_query if self.role == "query" else self.model.encode_document
        return encode(list(texts), batch_size=batch_size, show_progress_bar=show_progress,
                      convert_to_numpy=True, normalize_embeddings=True)


class TeacherEncoder:
    """Adapter around ``optical.models.teacher.load_teacher`` objects (CLIP, cross-encoder, …)."""

    def __init__(self, kind: str, model: str | None, max_length: int | None):
        import torch

        from optical.models import teacher as teacher_module  # lazy: heavy, and optional here
        from optical.models.sources import resolve_model

        options = {"max_length": max_length} if max_length else {}  # else the kind's default
        if torch.cuda.is_available():
            options["device"] = "cuda"
        self.teacher = teacher_module.load_teacher(kind, model, **options)
        self.name = getattr(self.teacher, "name", f"{kind}:{model}")
        spec = getattr(self.teacher, "spec", None) or model or self.name
        try:
            resolved = resolve_model(spec)
        except OpticalError:
            resolved = spec
        self.identity = f"{kind}:{model_identity(spec, resolved)}:{max_length}"

    def with_role(self, role: str) -> "TeacherEncoder":
        return self

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return self.teacher.encode(list(texts), batch_size=batch_size, show_progress=False)


def encode_texts(encoder, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Encode ``texts`` → ``[n, dim]`` float32, L2-normalised, in the input order.

    Texts are sorted by length so each batch pads to similar lengths, then fed in chunks
    of a few batches so one progress bar covers any encoder.
    """
    from tqdm.auto import tqdm

    if not texts:
        raise OpticalError("nothing to encode (empty text list)")
    order = np.argsort([-len(t) for t in texts], kind="stable")
    chunk = batch_size * 8
    parts = []
    for start in tqdm(range(0, len(texts), chunk), desc=f"encode {encoder.name}", unit="chunk",
                      disable=not show_progress):
        part = [texts[i] for i in order[start:start + chunk]]
        parts.append(np.asarray(encoder.encode(part, batch_size=batch_size, show_progress=False),
                                dtype=np.float32))
    sorted_vectors = np.concatenate(parts)
    vectors = np.empty_like(sorted_vectors)
    vectors[order] = sorted_vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def embedding_key(encoder, texts: dict[str, str]) -> str:
    """Cache name of a corpus' embeddings: the encoder's identity and role, the ids and texts."""
    return cache_key(encoder.identity, getattr(encoder, "role", "document"), texts.keys(), texts.values())


def encode_cached(encoder, texts: dict[str, str], cache_dir: Path | None, batch_size: int = 64,
                  show_progress: bool = False) -> np.ndarray:
    """Encode a corpus (id → text), reusing ``<cache_dir>/<key>.npy`` when present.

    The key hashes the encoder's identity and role with the corpus ids and texts, so a
    retrained model or a changed (or perturbed) corpus never hits a stale file.
    """
    if cache_dir is None:
        return encode_texts(encoder, list(texts.values()), batch_size, show_progress)
    path = Path(cache_dir) / f"{embedding_key(encoder, texts)}.npy"
    if path.is_file():
        vectors = np.load(path, allow_pickle=False)
        if len(vectors) == len(texts):
            return vectors
    vectors = encode_texts(encoder, list(texts.values()), batch_size, show_progress)
    with atomic_file(path) as tmp, tmp.open("wb") as handle:  # a killed run leaves no truncated entry
        np.save(handle, vectors, allow_pickle=False)
    return vectors


# ------------------------------------------------------------------ runs and their models

@dataclass
class RunModels:
    """What ``--student`` points to: the student folder and, for a run dir, its teacher."""

    student: str | None
    teacher: TeacherConfig | None


def resolve_run(student: str | Path | None) -> RunModels:
    """A run directory (read by :func:`optical.run_dir.load_run`), a sentence-transformers
    folder, a packaged model or a hub id."""
    if student is None:
        return RunModels(None, None)
    path = Path(student)
    if not path.exists():
        spec = str(student)
        if spec.startswith("packaged:") or (not spec.startswith((".", "/", "~")) and spec.count("/") == 1
                                            and not path.parent.is_dir()):
            return RunModels(resolve_model(spec), None)  # a packaged model or a hub id
        raise OpticalError(f"{path}: student run directory or model folder not found")
    if is_run_dir(path):
        recipe, student_dir = load_run(path)
        return RunModels(str(student_dir), recipe.teacher)
    if (path / "modules.json").is_file() or (path / "config.json").is_file():
        return RunModels(str(path), None)
    raise OpticalError(f"{path}: neither a run directory (student/, recipe.yaml) nor a "
                       f"sentence-transformers folder (modules.json)")


def load_teacher_encoder(config: TeacherConfig | str):
    """The teacher as an encoder: a run's teacher section, or (``--teacher``) a
    sentence-transformers model spec read at the model's own max length."""
    if isinstance(config, str):
        return SentenceTransformerEncoder(config)
    if config.kind == "sentence-transformers":
        return SentenceTransformerEncoder(config.model_spec, max_length=config.max_length)
    return TeacherEncoder(config.kind, config.model, config.max_length)


class EncoderFactory:
    """Turns ``student`` / ``teacher`` / model specs into encoders, loading each model once."""

    def __init__(self, student: str | Path | None = None, teacher: str | None = None):
        self.run = resolve_run(student)
        self.teacher = teacher or self.run.teacher  # --teacher overrides (or supplies) the run's
        self._loaded: dict[str, object] = {}

    def get(self, spec: str, role: str):
        """Encoder for ``spec`` on side ``role`` (``query`` or ``document``)."""
        if spec not in self._loaded:
            self._loaded[spec] = self._load(spec)
        return self._loaded[spec].with_role(role)

    def has_teacher(self) -> bool:
        return self.teacher is not None

    def _load(self, spec: str):
        mixture = parse_mixture(spec)
        if mixture is not None:  # its terms are loaded once each, and shared with plain uses
            return MixtureEncoder(mixture, [(w, self.get(name, "document")) for w, name in mixture.terms])
        if spec == "student":
            if self.run.student is None:
                raise OpticalError("encoder 'student' needs --student RUN_DIR or MODEL_FOLDER")
            return SentenceTransformerEncoder(self.run.student)
        if spec == "teacher":
            if self.teacher is None:
                raise OpticalError("encoder 'teacher' needs --student RUN_DIR with a recipe.yaml "
                                   "teacher section, or --teacher MODEL")
            return load_teacher_encoder(self.teacher)
        return SentenceTransformerEncoder(spec)
