"""Encoder mixtures: one vector from several encoders of the same space.

A distilled student lives in its teacher's embedding space, so the two can be added:
``--doc-encoder "student+0.3*teacher"`` indexes each document as

    normalize(1.0 · student(d) + 0.3 · teacher(d)),      every term L2-normalised first,

and ``--query-encoder "teacher+student"`` does the same for queries. The teacher reads the
English a target-language page still holds (untranslated titles, product and code names)
exactly, where the student's linear map blurs it; the student reads the rest
(docs/results.md, "Mixing teacher and student"). The index keeps one vector per document.

    >>> parse_mixture("student+0.3*teacher")
    MixtureSpec(terms=((1.0, 'student'), (0.3, 'teacher')))
    >>> str(parse_mixture(" teacher + student "))
    'teacher+student'
    >>> parse_mixture("student") is None          # one encoder: not a mixture
    True
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optical.errors import OpticalError

_TERM = re.compile(r"(?:(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>\S(?:.*\S)?)")


@dataclass(frozen=True)
class MixtureSpec:
    """``terms``: (weight, encoder spec) pairs, in the order given."""

    terms: tuple[tuple[float, str], ...]

    def __str__(self) -> str:
        return "+".join(name if weight == 1.0 else f"{weight:g}*{name}" for weight, name in self.terms)


def parse_mixture(spec: str) -> MixtureSpec | None:
    """``"student+0.3*teacher"`` → a :class:`MixtureSpec`; None for a single encoder spec (no
    ``+``, or an existing path whose name holds one). Weights are positive numbers (default 1);
    each encoder appears once; a term is ``student``, ``teacher`` or a model spec."""
    if "+" not in spec or Path(spec).exists():
        return None
    shown = spec if len(spec) <= 80 else spec[:77] + "..."
    terms: list[tuple[float, str]] = []
    for part in spec.split("+"):
        match = _TERM.fullmatch(part.strip())
        if match is None:
            raise OpticalError(f"encoder mixture {shown!r}: empty term; write e.g. student+0.3*teacher")
        name = match["name"]
        if "*" in name:
            raise OpticalError(f"encoder mixture {shown!r}: {part.strip()!r} is not WEIGHT*ENCODER "
                               f"with a positive number as WEIGHT")
        weight = float(match["weight"]) if match["weight"] is not None else 1.0
        if not (math.isfinite(weight) and weight > 0):
            raise OpticalError(f"encoder mixture {shown!r}: weight {match['weight']} must be a positive number")
        if any(name == other for _, other in terms):
            raise OpticalError(f"encoder mixture {shown!r}: {name!r} appears twice; give it one weight")
        terms.append((weight, name))
    return MixtureSpec(tuple(terms))


class MixtureEncoder:
    """Weighted sum of L2-normalised encoder outputs (all of one dimension), renormalised.

    ``members``: (weight, encoder) pairs; each encoder has ``encode``, ``name``, ``identity``
    and ``with_role`` (:mod:`optical.eval.encoders`)."""

    def __init__(self, spec: MixtureSpec, members: list[tuple[float, object]], role: str = "document"):
        self.spec, self.members, self.role = spec, members, role
        self.name = str(spec)
        # the cache key changes with any member's weights, any weight and the order
        self.identity = "mix(" + ",".join(f"{w!r}*{e.identity}" for w, e in members) + ")"

    def with_role(self, role: str) -> "MixtureEncoder":
        return MixtureEncoder(self.spec, [(w, e.with_role(role)) for w, e in self.members], role)

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """``[n, dim]`` float32: Σ_k w_k · v_k / ‖v_k‖, L2-normalised."""
        total = None
        for weight, encoder in self.members:
            vectors = np.asarray(encoder.encode(texts, batch_size=batch_size, show_progress=show_progress),
                                 dtype=np.float32)
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            if total is not None and vectors.shape[1] != total.shape[1]:
                raise OpticalError(f"encoder mixture {self.name!r}: {encoder.name!r} gives {vectors.shape[1]} "
                                   f"dimensions, the terms before it {total.shape[1]}; mix encoders of one space "
                                   f"(a student and its own teacher)")
            total = weight * vectors if total is None else total + weight * vectors
        return total / np.maximum(np.linalg.norm(total, axis=1, keepdims=True), 1e-12)
