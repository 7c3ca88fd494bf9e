"""Token states of several encoder layers side by side: the student's multi-layer features.

A sentence-transformers module placed between the Transformer (which must return every
layer: `config.output_hidden_states = True`) and mean Pooling. It replaces
`token_embeddings` [B, m, h] by the chosen layers' states concatenated along the feature
axis [B, m, len(layers)·h]; pooling and the linear head then see all of them, so the head
is a sum of per-layer maps. Layer 0 is the embedding output, L the last layer.

Why: on help-page CLIR (vi, docs/results.md) the closed-form head on the last layer alone
reaches nDCG@10 0.789, on all 13 layers of e5-small 0.842: the embedding layer carries the
shared lexical material (product names, code words), the middle layers the
language-neutral part that the last layer of an MLM-trained encoder partly loses.

    >>> import torch
    >>> concat = LayerConcat(layers=[0, 2])
    >>> states = tuple(torch.full((1, 3, 4), float(i)) for i in range(3))
    >>> out = concat({"all_layer_embeddings": states, "token_embeddings": states[-1]})
    >>> out["token_embeddings"].shape, out["token_embeddings"][0, 0].tolist()
    (torch.Size([1, 3, 8]), [0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
"""

from __future__ import annotations

import torch
from sentence_transformers.base.modules import Module


class LayerConcat(Module):
    """`token_embeddings` := concat(all_layer_embeddings[i] for i in layers) [B, m, len(layers)·h]."""

    config_keys: list[str] = ["layers"]

    def __init__(self, layers: list[int]):
        super().__init__()
        self.layers = [int(i) for i in layers]

    def forward(self, features: dict) -> dict:
        states = features.get("all_layer_embeddings")
        if states is None:
            raise RuntimeError("LayerConcat needs every layer's states: set output_hidden_states "
                               "on the Transformer's config")
        features["token_embeddings"] = torch.cat([states[i] for i in self.layers], dim=-1)
        return features

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)  # no weights: the layer list is the whole module
