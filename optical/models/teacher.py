"""Frozen English teachers: token states and a sentence embedding, never trained.

| kind | model | token states | sentence embedding |
|---|---|---|---|
| sentence-transformers | bi-encoder folder / hub id | Transformer token embeddings (through any post-pooling Dense) | the model's own sentence embedding |
| clip | CLIPModel | text-tower states through final LayerNorm and text_projection | projected text embedding (`get_text_features`) |
| cross-encoder | AutoModelForSequenceClassification | its encoder's token states | the [CLS] state |
| hf | any AutoModel | its token states | mean over real tokens |

CLIP token states go through the same text projection as the pooled embedding, so the
student's single head serves both levels and student(text) lands where image embeddings are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from optical.errors import OpticalError
from optical.models.sources import folder_identity, resolve_model
from optical.recipe import TEACHER_DEFAULTS

KINDS = tuple(TEACHER_DEFAULTS)


@dataclass
class TeacherOutput:
    """token_states [B, n, D], attention_mask [B, n], sentence [B, D], input_ids [B, n]."""

    token_states: torch.Tensor
    attention_mask: torch.Tensor
    sentence: torch.Tensor
    input_ids: torch.Tensor


class Teacher(nn.Module):
    """A frozen teacher of one of KINDS; `dim` is the space the student is trained into."""

    def __init__(self, kind: str, spec: str, model: nn.Module, tokenizer, max_length: int, layer: int = -1,
                 st_model=None):
        super().__init__()
        self.kind, self.spec, self.model, self.tokenizer = kind, spec, model, tokenizer
        self.max_length, self.layer, self.st_model = max_length, layer, st_model
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # a teacher never leaves eval mode (no dropout)
        return super().train(False)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.spec}"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        with torch.no_grad():
            out = self.forward(self.tokenize(["dimension probe"]))
        return out.sentence.shape[-1]

    def fingerprint(self) -> str:
        """Identifies teacher + settings for the on-disk cache of its outputs."""
        resolved = resolve_model(self.spec)
        stamp = folder_identity(resolved) if Path(resolved).exists() else ""
        key = f"{self.kind}|{self.spec}|{self.max_length}|{self.layer}|{stamp}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    @torch.no_grad()
    def forward(self, features: dict[str, torch.Tensor]) -> TeacherOutput:
        features = {k: v.to(self.device) for k, v in features.items()}
        mask = features["attention_mask"]
        if self.kind == "clip":
            tokens, sentence = self._clip(features)
        elif self.kind == "sentence-transformers":
            tokens, sentence = self._sentence_transformer(features)
        else:
            encoder = self.model.base_model if self.kind == "cross-encoder" else self.model
            out = encoder(**features, output_hidden_states=True)
            tokens = out.hidden_states[self.layer]
            if self.kind == "cross-encoder":
                sentence = tokens[:, 0]
            else:
                m = mask.unsqueeze(-1).to(tokens.dtype)
                sentence = (tokens * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return TeacherOutput(tokens, mask.bool(), sentence, features["input_ids"])

    def _clip(self, features):
        text = self.model.text_model
        inputs = {k: v for k, v in features.items() if k != "token_type_ids"}
        out = text(**inputs, output_hidden_states=True)
        states = out.hidden_states[self.layer] if self.layer != -1 else out.last_hidden_state
        if self.layer != -1:
            states = text.final_layer_norm(states)
        projection = self.model.text_projection
        return projection(states), projection(out.pooler_output)

    def _sentence_transformer(self, features):
        st = self.st_model
        out = st[0].auto_model(**features, output_hidden_states=True)
        states = out.hidden_states[self.layer]
        rest = {"token_embeddings": out.hidden_states[-1], "attention_mask": features["attention_mask"],
                "input_ids": features["input_ids"]}
        tokens = states
        for i in range(1, len(st)):
            module = st[i]
            rest = module(rest)
            # Post-pooling Dense layers define the embedding space: map the tokens there too.
            if hasattr(module, "linear") and hasattr(module, "activation_function"):
                tokens = module.activation_function(module.linear(tokens))
        return tokens, rest["sentence_embedding"]

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """L2-normalised sentence embeddings [N, D], length-sorted batches."""
        from tqdm.auto import tqdm

        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), 0), dtype=np.float32)
        chunks = []
        for start in tqdm(range(0, len(texts), batch_size), disable=not show_progress, desc="teacher encode"):
            batch = [texts[i] for i in order[start:start + batch_size]]
            sentence = self.forward(self.tokenize(batch)).sentence.float()
            chunks.append(torch.nn.functional.normalize(sentence, dim=-1).cpu().numpy())
        if chunks:
            stacked = np.concatenate(chunks)
            out = np.empty_like(stacked)
            out[order] = stacked
        return out

    @torch.no_grad()
    def encode_images(self, images, batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """CLIP only: L2-normalised image embeddings [N, D] from PIL images or paths."""
        if self.kind != "clip":
            raise OpticalError(f"image encoding needs a clip teacher, this one is {self.kind!r}")
        from PIL import Image
        from tqdm.auto import tqdm
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(resolve_model(self.spec))
        chunks = []
        for start in tqdm(range(0, len(images), batch_size), disable=not show_progress, desc="image encode"):
            batch = [Image.open(x).convert("RGB") if isinstance(x, (str, Path)) else x
                     for x in images[start:start + batch_size]]
            pixels = processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            vision = self.model.vision_model(pixel_values=pixels)
            emb = self.model.visual_projection(vision.pooler_output).float()
            chunks.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def _check_layer(kind: str, spec: str, net, layer: int) -> None:
    """An out-of-range teacher.layer would be an IndexError deep inside the first batch."""
    if layer == -1:
        return
    holder = getattr(net[0], "auto_model", None) if kind == "sentence-transformers" else net
    config = getattr(holder, "config", None)
    config = getattr(config, "text_config", config)  # CLIP: the text tower's layers
    count = getattr(config, "num_hidden_layers", None)
    if count is None:
        return
    # hidden_states holds the embeddings plus one entry per layer
    if not -(count + 1) <= layer <= count:
        raise OpticalError(f"teacher.layer: {layer} is out of range for {spec!r}, which has {count} layers "
                           f"(use 0..{count} or -1..-{count + 1})")


def load_teacher(kind: str, model: str | None = None, max_length: int = 128, layer: int = -1,
                 device: str | torch.device | None = None) -> Teacher:
    """Load a frozen teacher by kind and hub id / path / packaged:NAME (None: the kind's default)."""
    if kind not in KINDS:
        raise OpticalError(f"unknown teacher kind {kind!r} (known: {', '.join(KINDS)})")
    spec = model or TEACHER_DEFAULTS[kind]
    path = resolve_model(spec)
    st_model = None
    try:
        if kind == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            st_model = SentenceTransformer(path, device="cpu")
            net, tokenizer = st_model, st_model[0].tokenizer
        else:
            from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, CLIPModel

            loader = {"clip": CLIPModel, "cross-encoder": AutoModelForSequenceClassification, "hf": AutoModel}[kind]
            net = loader.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise OpticalError(f"cannot load {kind} teacher {spec!r}: {str(err).splitlines()[0]}") from None
    if kind == "clip":
        max_length = min(max_length, net.config.text_config.max_position_embeddings)
    _check_layer(kind, spec, net, layer)
    teacher = Teacher(kind, spec, net, tokenizer, max_length, layer, st_model)
    if device is not None:
        teacher.to(device)
    return teacher
