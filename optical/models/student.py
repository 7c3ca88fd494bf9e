"""The multilingual student: HF encoder → mean pooling → linear head into the teacher's space.

The student is a sentence-transformers model built from three modules (Transformer,
mean Pooling, Dense with identity activation), so a saved student is an ordinary
sentence-transformers folder: `SentenceTransformer(path).encode(...)` gives exactly the
embeddings `Student.encode` gives. With `layers` (e.g. "all"), a `LayerConcat` module
between the Transformer and the pooling puts several layers' token states side by side,
and the head reads all of them; the saved folder carries its source (`layer_concat.py`) and
loads with `trust_remote_code=True`. The same linear head maps token states for the
token-level OT loss; because mean pooling and the head are both linear, the sentence
embedding is the mean of the projected token states.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from optical.errors import OpticalError, writing
from optical.models.sources import resolve_model


#: LayerConcat as a saved folder names it: a copy of optical/models/layer_concat.py sits in the
#: folder, so `SentenceTransformer(path, trust_remote_code=True)` loads it without optical.
LOCAL_LAYER_CONCAT = "layer_concat.LayerConcat"
OWN_MODULES = ("optical.models.layer_concat.LayerConcat", LOCAL_LAYER_CONCAT)


def _layer_concat_source() -> bytes:
    return (Path(__file__).parent / "layer_concat.py").read_bytes()


def load_sentence_transformer(path: str | Path, **kwargs):
    """`SentenceTransformer(path)` that also loads optical's own module (`LayerConcat`).

    sentence-transformers ≥ 6 wants `trust_remote_code=True` for any module class outside
    the library. It is passed only when `modules.json` names nothing but the library's
    classes and LayerConcat, and the folder's copy of `layer_concat.py` is byte for byte
    optical's own, so a folder carrying any other code is still refused."""
    import json

    from sentence_transformers import SentenceTransformer

    folder = Path(path)
    manifest = folder / "modules.json"
    trusted = False
    if manifest.is_file():
        try:
            types = [entry.get("type", "") for entry in json.loads(manifest.read_text(encoding="utf-8"))]
        except (ValueError, AttributeError):
            types = []
        own = [t for t in types if t in OWN_MODULES]
        copy = folder / "layer_concat.py"
        trusted = bool(own) and all(t in OWN_MODULES or t.startswith("sentence_transformers.") for t in types) and (
            LOCAL_LAYER_CONCAT not in own or (copy.is_file() and copy.read_bytes() == _layer_concat_source()))
    return SentenceTransformer(str(path), trust_remote_code=trusted, **kwargs)


def st_modules():
    """sentence-transformers' module classes (moved in v6; keep older releases working)."""
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as modules
    return modules


class Student(nn.Module):
    """Student encoder with its projection head.

    | method | returns |
    |---|---|
    | tokenize(texts) | dict of [B, m] tensors |
    | forward(features) | token_states [B, m, D], sentence [B, D] (both projected) |
    | encode(texts) | np.ndarray [N, D], L2-normalised |
    """

    def __init__(self, model, prefix: str = ""):
        super().__init__()
        self.model = model
        self.prefix = prefix

    # ----------------------------------------------------------------- construction
    @classmethod
    def create(cls, spec: str, output_dim: int, max_length: int = 128, prefix: str = "",
               cache_dir: Path | None = None, normalize: bool = False,
               layers: str | tuple[int, ...] = "last") -> "Student":
        """A fresh student from any HF encoder (hub id, path, packaged:NAME); head = identity/zero-padded.
        `normalize`: L2-normalise the pooled state before the head (a Normalize module).
        `layers`: "last", "all" (embeddings + every layer) or layer numbers (0 = embeddings)
        whose token states are concatenated before pooling (see `layer_concat`)."""
        from sentence_transformers import SentenceTransformer

        modules = st_modules()
        path = resolve_model(spec, cache_dir)
        try:
            word = modules.Transformer(path, max_seq_length=max_length)
        except OSError as err:
            raise OpticalError(f"cannot load student model {spec!r}: {str(err).splitlines()[0]}") from None
        hidden = word.get_embedding_dimension() if hasattr(word, "get_embedding_dimension") \
            else word.get_word_embedding_dimension()
        chosen = resolve_layers(layers, word.auto_model.config.num_hidden_layers, spec)
        width = hidden * (len(chosen) if chosen else 1)
        pool = modules.Pooling(width, pooling_mode="mean")
        # Identity-like start on the last layer's block (the warm start replaces it with a fitted map).
        weight = torch.zeros(output_dim, width)
        weight[:, width - hidden:] = torch.eye(output_dim, hidden)
        head = modules.Dense(width, output_dim, bias=True, activation_function=nn.Identity(),
                             init_weight=weight, init_bias=torch.zeros(output_dim))
        kwargs = {}
        if prefix:
            # The same prompt for every role: `encode`, `encode_query` and `encode_document`
            # (what `optical eval` calls) must all see what training saw. With only a
            # "default" prompt, sentence-transformers gives query/document an empty one.
            kwargs = dict(prompts={"default": prefix, "query": prefix, "document": prefix},
                          default_prompt_name="default")
        stack = [word, pool, modules.Normalize(), head] if normalize else [word, pool, head]
        if chosen:
            from optical.models.layer_concat import LayerConcat

            word.auto_model.config.output_hidden_states = True  # saved with the encoder's config
            stack.insert(1, LayerConcat(chosen))
        st = SentenceTransformer(modules=stack, device="cpu", **kwargs)
        st.max_seq_length = max_length
        _settle_card_data(st)
        return cls(st, prefix)

    @classmethod
    def load(cls, path: str | Path) -> "Student":
        """Load a saved student: its folder (a sentence-transformers folder with a Dense head)
        or the run directory that holds it."""
        from optical.run_dir import is_run_dir, load_run

        path = Path(path)
        if is_run_dir(path):
            _, path = load_run(path)
        if not (path / "modules.json").is_file():
            raise OpticalError(f"{path}: not a student folder (no modules.json)")
        st = load_sentence_transformer(path, device="cpu")
        _settle_card_data(st)
        prefix = (st.prompts or {}).get(st.default_prompt_name or "", "") if st.default_prompt_name else ""
        student = cls(st, prefix)
        student.head  # validates the layout
        return student

    # ----------------------------------------------------------------- parts
    @property
    def transformer(self) -> nn.Module:
        return self.model[0]

    @property
    def head(self) -> nn.Linear:
        last = self.model[len(self.model) - 1]
        if not hasattr(last, "linear"):
            raise OpticalError("student has no projection head (last module is not Dense)")
        return last.linear

    @property
    def layers(self) -> list[int] | None:
        """The concatenated layers (0 = embeddings), or None for the last layer alone."""
        for module in self.model:
            if type(module).__name__ == "LayerConcat":
                return list(module.layers)
        return None

    @property
    def normalizes(self) -> bool:
        """True when the pooled state is L2-normalised before the head."""
        return any(type(m).__name__ == "Normalize" for m in self.model)

    @property
    def tokenizer(self):
        return self.transformer.tokenizer

    @property
    def hidden_dim(self) -> int:
        return self.head.in_features

    @property
    def output_dim(self) -> int:
        return self.head.out_features

    @property
    def max_length(self) -> int:
        return self.model.max_seq_length

    def use_layers(self, layers: str | tuple[int, ...] | list[int], key: str = "student.layers") -> bool:
        """Read `layers` from now on ("last", "all" or layer numbers, as `create` takes them):
        put a LayerConcat in or take it out, and give the pooling and the head the new width.
        The new head is zero: fit it (`warm_start`) before use. False when nothing changes.

        >>> student.use_layers("all")   # a last-layer student reads all 13 layers of e5-small
        True
        """
        encoder = self.transformer.auto_model
        chosen = resolve_layers(layers, encoder.config.num_hidden_layers, "the student", key)
        if chosen == self.layers:
            return False
        from optical.models.layer_concat import LayerConcat

        modules, st = st_modules(), self.model
        device, dtype = self.head.weight.device, self.head.weight.dtype
        width = self.hidden_dim // len(self.layers or [0]) * len(chosen or [0])
        for i, module in enumerate(st):
            if type(module).__name__ == "LayerConcat":  # optical's class or a loaded folder's copy
                del st[i]
                break
        if chosen:
            st.insert(1, LayerConcat(chosen))
        encoder.config.output_hidden_states = chosen is not None  # saved with the encoder's config
        for i, module in enumerate(st):
            if isinstance(module, modules.Pooling):
                st[i] = modules.Pooling(width, pooling_mode="mean")
        out = self.output_dim
        st[len(st) - 1] = modules.Dense(width, out, bias=True, activation_function=nn.Identity(),
                                        init_weight=torch.zeros(out, width), init_bias=torch.zeros(out)
                                        ).to(device=device, dtype=dtype)
        return True

    def set_dropout(self, p: float) -> int:
        """Set the probability of every dropout layer (train mode only); returns how many."""
        layers = [m for m in self.model.modules() if isinstance(m, nn.Dropout)]
        for layer in layers:
            layer.p = p
        return len(layers)

    def freeze_word_embeddings(self) -> int:
        """Stop training the input word embeddings; returns how many parameters were frozen."""
        embeddings = self.transformer.auto_model.get_input_embeddings()
        embeddings.requires_grad_(False)
        return sum(p.numel() for p in embeddings.parameters())

    def prefix_length(self) -> int:
        """How many tokens the prefix adds after the first special token (masked out of OT)."""
        if not self.prefix:
            return 0
        return len(self.tokenizer(self.prefix, add_special_tokens=False)["input_ids"])

    # ----------------------------------------------------------------- compute
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        texts = [self.prefix + t for t in texts]
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def hidden_states(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unprojected token states [B, m, hidden_dim]: the last layer's, or the chosen
        layers' side by side (hidden_dim = len(layers) · the encoder's width)."""
        model = self.transformer.auto_model
        names = ("input_ids", "attention_mask", "token_type_ids")
        inputs = {k: v for k, v in features.items() if k in names}
        layers = self.layers
        if layers is None:
            return model(**inputs).last_hidden_state
        states = model(**inputs, output_hidden_states=True).hidden_states
        return torch.cat([states[i] for i in layers], dim=-1)

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected token states [B, m, D] and sentence embedding [B, D] (mean over real tokens)."""
        hidden = self.hidden_states(features)
        mask = features["attention_mask"].to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        if self.normalizes:
            # Divide the tokens by the pooled norm too: the sentence stays the mean of the
            # projected tokens, so token-level and sentence-level losses see one map.
            scale = 1.0 / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            hidden, pooled = hidden * scale.unsqueeze(1), pooled * scale
        return self.head(hidden), self.head(pooled)

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, show_progress_bar=show_progress,
                                 convert_to_numpy=True, normalize_embeddings=True).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write a sentence-transformers folder (safetensors weights)."""
        path = Path(path)
        # A fast tokenizer keeps the truncation/padding of its last call and writes it into
        # tokenizer.json; a student loaded from such a folder (a resumed run's checkpoint)
        # would then save extra keys in tokenizer_config.json. Every call sets them again.
        backend = getattr(self.model.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            backend.no_truncation()
            backend.no_padding()
        with writing(path):
            self.model.save(str(path), safe_serialization=True)
            if self.layers is not None:
                _bundle_layer_concat(path)
        return path




def _settle_card_data(st) -> None:
    """Model-card settings that must not depend on how the student was made: no hub lookups
    when saving, a retrieval model's usage example whether it was built or loaded
    (sentence-transformers guesses that from the prompts, and differently on load), and no
    model run on the example at every save (its printed scores would depend on which save
    wrote the card first, so a resumed run's card would differ from an unbroken one's)."""
    data = st.model_card_data
    data.local_files_only = True
    data.ir_model = True
    data.generate_widget_examples = False


def _bundle_layer_concat(folder: Path) -> None:
    """Put LayerConcat's source into a saved folder and name it there (`layer_concat.LayerConcat`),
    so that the folder loads with plain sentence-transformers (`trust_remote_code=True`)."""
    import json

    (folder / "layer_concat.py").write_bytes(_layer_concat_source())
    manifest = folder / "modules.json"
    entries = json.loads(manifest.read_text(encoding="utf-8"))
    for entry in entries:
        if entry.get("type") in OWN_MODULES:
            entry["type"] = LOCAL_LAYER_CONCAT
            # sentence-transformers copies the code of a module it loaded as remote code into
            # the module's folder; the root copy is the one it loads, so a student saved from a
            # loaded one (a resumed run) holds the same files as one saved from a fresh one
            if entry.get("path"):
                (folder / entry["path"] / "layer_concat.py").unlink(missing_ok=True)
    manifest.write_text(json.dumps(entries, indent=2), encoding="utf-8")


def resolve_layers(layers: str | tuple[int, ...] | list[int], depth: int, spec: str = "student",
                   key: str = "student.layers") -> list[int] | None:
    """Layer numbers to concatenate (0 = embeddings, `depth` = last), None for "last".

    >>> resolve_layers("all", 3), resolve_layers("last", 3), resolve_layers((0, -1), 3)
    ([0, 1, 2, 3], None, [0, 3])
    """
    if layers == "last":
        return None
    if layers == "all":
        return list(range(depth + 1))
    if isinstance(layers, str) or not layers:
        raise OpticalError(f"{key}: expected last, all or layer numbers, got {layers!r}")
    chosen = []
    for layer in layers:
        if not -(depth + 1) <= int(layer) <= depth:
            raise OpticalError(f"{key}: layer {layer} is out of range: {spec} has {depth} layers "
                               f"(0 = embeddings, {depth} = last, negative counts from the end)")
        chosen.append(int(layer) % (depth + 1))
    return chosen
