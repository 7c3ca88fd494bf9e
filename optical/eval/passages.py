"""Long documents: split into token windows (passages) and score a document from its passages.

A document longer than the encoder's max length is otherwise cut at that length. With a
passage spec ``WINDOW:STRIDE:AGG`` (``--passages``) each document is split into windows of
``WINDOW`` tokens of the document encoder's own tokenizer (special tokens and any prompt
prefix not counted), windows starting ``STRIDE`` tokens apart; each window's text is the
original substring (cut at token offsets). ``AGG`` turns passages back into one score
per document:

- ``max`` (BERT-MaxP): a document scores its best passage;
- ``mean``: one vector per document, the normalised mean of its passage embeddings;
- ``first`` (FirstP): the first window only, i.e. truncation at ``WINDOW`` tokens.

An encoder without a tokenizer (``encoder.model.tokenizer`` / ``encoder.teacher.tokenizer``
/ ``encoder.tokenizer``) is split on whitespace words instead.

>>> spec = parse_passages("3:2:max")
>>> split_text("a b c d e f", spec.window, spec.stride)
['a b c', 'c d e', 'e f']

:func:`with_max_length` (``--doc-max-length``) overrides how many tokens an encoder reads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from optical.errors import OpticalError

AGGREGATIONS = ("max", "mean", "first")
MAX_TOKENS = 1_000_000  # larger windows or strides are typos, not settings


@dataclass(frozen=True)
class PassageSpec:
    """``window`` and ``stride`` in tokens (1 ≤ stride ≤ window), ``agg`` one of AGGREGATIONS."""

    window: int
    stride: int
    agg: str

    def __str__(self) -> str:
        return f"{self.window}:{self.stride}:{self.agg}"


def parse_passages(spec: str | PassageSpec | None) -> PassageSpec | None:
    """``"64:32:max"`` → ``PassageSpec(64, 32, "max")``; None stays None; bad input → OpticalError.

    >>> parse_passages("512:256:mean").stride
    256
    """
    if spec is None or isinstance(spec, PassageSpec):
        return spec
    shown = repr(spec) if isinstance(spec, str) else f"{spec!r} (not a string)"
    fields = spec.strip().split(":") if isinstance(spec, str) else []
    if len(fields) != 3:
        raise OpticalError(f"--passages {shown}: expected WINDOW:STRIDE:AGG, e.g. 64:32:max")
    numbers = []
    for name, text in zip(("WINDOW", "STRIDE"), fields[:2]):
        text = text.strip()
        if not re.fullmatch(r"[0-9]{1,7}", text, flags=re.ASCII) or not 1 <= int(text) <= MAX_TOKENS:
            raise OpticalError(f"--passages {shown}: {name} must be an integer from 1 to {MAX_TOKENS}")
        numbers.append(int(text))
    window, stride = numbers
    if stride > window:
        raise OpticalError(f"--passages {shown}: STRIDE {stride} > WINDOW {window} would skip tokens")
    agg = fields[2].strip()
    if agg not in AGGREGATIONS:
        raise OpticalError(f"--passages {shown}: AGG must be one of {', '.join(AGGREGATIONS)}")
    return PassageSpec(window, stride, agg)


# ------------------------------------------------------------------------------- splitting

def tokenizer_of(encoder):
    """The encoder's Hugging Face tokenizer, or None (then passages are whitespace words)."""
    for holder in (getattr(encoder, "model", None), getattr(encoder, "teacher", None), encoder):
        tokenizer = getattr(holder, "tokenizer", None)
        if callable(tokenizer):
            return tokenizer
    return None


def _tokens(texts: list[str], tokenizer=None) -> list[list]:
    """Per text: character ``(start, end)`` of each token (fast tokenizers, whitespace words),
    or the token ids (slow tokenizers, which have no offsets). No special tokens."""
    if tokenizer is None:
        return [[m.span() for m in re.finditer(r"\S+", t)] for t in texts]
    if not getattr(tokenizer, "is_fast", False):
        return [tokenizer(t, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
                for t in texts]
    enc = tokenizer(texts, add_special_tokens=False, truncation=False, return_offsets_mapping=True,
                    verbose=False)
    return [[(int(a), int(b)) for a, b in offsets] for offsets in enc["offset_mapping"]]


def _bounds(n_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Token ranges ``[s, min(s + window, n))`` for s = 0, stride, … until one reaches the end."""
    bounds = []
    for start in range(0, n_tokens, stride):
        bounds.append((start, min(start + window, n_tokens)))
        if start + window >= n_tokens:
            break
    return bounds


def split_texts(texts: list[str], window: int, stride: int, tokenizer=None,
                chunk: int = 1000) -> list[list[str]]:
    """Each text → its passages (≥ 1; a passage is empty only when its text is blank).

    A text of at most ``window`` tokens is its own (stripped) single passage. Fast
    tokenizers cut at token offsets (passages are substrings of the text); slow ones,
    which have no offsets, decode each window's token ids.

    >>> split_texts(["one two three four five", "six"], 4, 2)
    [['one two three four', 'three four five'], ['six']]
    """
    decode = tokenizer.decode if tokenizer is not None and not getattr(tokenizer, "is_fast", False) else None
    out = []
    for start in range(0, len(texts), chunk):  # chunks bound the memory held by token offsets
        part = texts[start:start + chunk]
        out += [_windows(text, tokens, window, stride, decode)
                for text, tokens in zip(part, _tokens(part, tokenizer))]
    return out


def _windows(text: str, tokens: list, window: int, stride: int, decode=None) -> list[str]:
    """One text's passages from its token offsets (or, with ``decode``, its token ids)."""
    if len(tokens) <= window:
        return [text.strip()]
    bounds = _bounds(len(tokens), window, stride)
    if decode is not None:
        pieces = [decode(tokens[a:b]).strip() for a, b in bounds]
    else:
        pieces = [text[tokens[a][0]:max(tokens[b - 1][1], tokens[a][0])].strip() for a, b in bounds]
    return [p for p in pieces if p] or [text.strip()]


def split_text(text: str, window: int, stride: int, tokenizer=None) -> list[str]:
    """One document → its passages (see :func:`split_texts`).

    >>> split_text("a b c d e f", 3, 2)
    ['a b c', 'c d e', 'e f']
    """
    return split_texts([text], window, stride, tokenizer)[0]


@dataclass
class Passages:
    """A corpus split for one spec.

    ``texts``: passage id (``<docid>#<i>``) → text, ``[n_passages]``, grouped by document in
    corpus order; ``owner``: ``[n_passages]`` int64, the row of each passage's document;
    ``encoder``: the document encoder under an identity naming the split (cache key).
    """

    spec: PassageSpec
    texts: dict[str, str]
    owner: np.ndarray
    n_docs: int
    encoder: object

    def index_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Passage embeddings ``[n_passages, dim]`` → what to index (``mean``: ``[n_docs, dim]``)."""
        if self.spec.agg != "mean":
            return vectors
        starts = np.flatnonzero(np.r_[True, self.owner[1:] != self.owner[:-1]])
        sums = np.add.reduceat(vectors.astype(np.float64), starts, axis=0)
        return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def search(self, index, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query → (scores ``[q, k]``, document rows ``[q, k]``, -1 = none)."""
        from optical.eval.index import search

        if self.spec.agg != "max":  # one vector per document: rows are document rows
            return search(index, query_vectors, k)
        return search_max(index, query_vectors, self.owner, self.n_docs, k)


def split_corpus(corpus: dict[str, str], encoder, spec: str | PassageSpec) -> Passages:
    """Split every document of ``corpus`` (id → text) with ``encoder``'s tokenizer.

    ``first`` keeps one passage per document. Raises OpticalError when a window (plus the
    special tokens and the document prompt) would not fit the encoder's max length.
    """
    spec = parse_passages(spec)
    tokenizer = tokenizer_of(encoder)
    _check_window_fits(encoder, tokenizer, spec)
    texts: dict[str, str] = {}
    owner: list[int] = []
    split = split_texts(list(corpus.values()), spec.window, spec.stride, tokenizer)
    for row, (doc_id, pieces) in enumerate(zip(corpus, split)):
        for i, piece in enumerate(pieces[:1] if spec.agg == "first" else pieces):
            texts[f"{doc_id}#{i}"] = piece
            owner.append(row)
    # Same windows → same vectors: max and mean share cache entries, other splits never do.
    keyed = _Renamed(encoder, f"{encoder.identity}|passages={spec.window}:{spec.stride}")
    return Passages(spec, texts, np.asarray(owner, dtype=np.int64), len(corpus), keyed)


# -------------------------------------------------------------------------------- MaxP search

def _best_per_doc(scores: np.ndarray, ids: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Passages in score order → (document rows, their best score), best first."""
    valid = ids >= 0
    docs, scores = owner[ids[valid]], scores[valid]
    unique, first = np.unique(docs, return_index=True)
    order = np.argsort(first, kind="stable")
    return unique[order], scores[first[order]]


def search_max(index, query_vectors: np.ndarray, owner: np.ndarray, n_docs: int, k: int,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """BERT-MaxP over a passage index: top-``k`` documents by their best passage.

    Searches ``k × mean passages per document`` passages, and twice as deep for queries
    whose hits cover fewer than ``k`` documents, up to ``k × max passages per document``
    (capped at the index size). Once the hits cover ``k`` documents, no document outside
    them can beat them, so the result equals brute force for an exact index.
    Returns (scores ``[q, k]``, document rows ``[q, k]``), -1 rows where fewer were found.
    """
    from optical.eval.index import search

    n = index.ntotal
    k = max(1, min(k, n_docs))
    per_doc = np.bincount(owner, minlength=n_docs)
    limit = min(n, k * int(per_doc.max()))
    depth = min(limit, k * math.ceil(n / n_docs))
    out_scores = np.full((len(query_vectors), k), -np.inf, dtype=np.float32)
    out_rows = np.full((len(query_vectors), k), -1, dtype=np.int64)
    pending = np.arange(len(query_vectors))
    while pending.size:
        deeper = []
        for block in np.array_split(pending, math.ceil(len(pending) / batch_size)):  # bounds [block, depth]
            scores, ids = search(index, query_vectors[block], depth)
            for q, score_row, id_row in zip(block, scores, ids):
                docs, best = _best_per_doc(score_row, id_row, owner)
                if len(docs) >= k or depth >= limit:
                    out_rows[q, :len(docs[:k])], out_scores[q, :len(docs[:k])] = docs[:k], best[:k]
                else:
                    deeper.append(q)
        pending, depth = np.asarray(deeper, dtype=np.int64), min(limit, depth * 2)
    return out_scores, out_rows


# ------------------------------------------------------------------ the encoder's max length

class _Renamed:
    """The same encoder under another ``identity`` (everything else is the wrapped one's)."""

    def __init__(self, inner, identity: str):
        self.inner, self.identity = inner, identity

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def encode(self, texts, batch_size: int = 64, show_progress: bool = False):
        return self.inner.encode(texts, batch_size=batch_size, show_progress=show_progress)


class _LengthLimited(_Renamed):
    """Reads up to ``max_tokens_override`` tokens; restores the shared model's own length after."""

    def __init__(self, inner, max_length: int):
        super().__init__(inner, f"{inner.identity}|max_length={max_length}")
        self.max_tokens_override = max_length

    def encode(self, texts, batch_size: int = 64, show_progress: bool = False):
        holder, attribute = _length_slot(self.inner)
        before = getattr(holder, attribute)
        setattr(holder, attribute, self.max_tokens_override)
        try:
            return self.inner.encode(texts, batch_size=batch_size, show_progress=show_progress)
        finally:
            setattr(holder, attribute, before)  # the query side may share this model


def _length_slot(encoder):
    """(object, attribute) holding the encoder's max tokens, or None."""
    model, teacher = getattr(encoder, "model", None), getattr(encoder, "teacher", None)
    if model is not None and hasattr(model, "max_seq_length"):
        return model, "max_seq_length"  # sentence-transformers
    if teacher is not None and hasattr(teacher, "max_length"):
        return teacher, "max_length"  # optical.models.teacher.Teacher
    return None


def max_tokens(encoder) -> int | None:
    """How many tokens (special tokens and prompt included) the encoder reads; None: unknown."""
    override = getattr(encoder, "max_tokens_override", None)
    if override:
        return override
    slot = _length_slot(encoder)
    return getattr(*slot) if slot else None


def _position_limit(encoder) -> int | None:
    """Positions the model has (learned position embeddings), or None when unbounded/unknown."""
    slot = _length_slot(encoder)
    modules = getattr(slot[0], "modules", None) if slot else None
    if modules is None:
        return None
    for module in modules():
        for name in ("position_embeddings", "position_embedding"):
            table = getattr(module, name, None)
            if hasattr(table, "num_embeddings"):
                offset = getattr(module, "padding_idx", None)  # RoBERTa-style positions start after it
                return table.num_embeddings - (offset + 1 if isinstance(offset, int) else 0)
    return None


def parse_max_length(max_length: int | None) -> int | None:
    """None or a positive int (``--doc-max-length``); anything else → OpticalError."""
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or not 1 <= max_length <= MAX_TOKENS):
        raise OpticalError(f"--doc-max-length must be an integer from 1 to {MAX_TOKENS}, got {max_length!r}")
    return max_length


def with_max_length(encoder, max_length: int | None):
    """``encoder`` reading up to ``max_length`` tokens (a new cache identity); None: unchanged."""
    if parse_max_length(max_length) is None:
        return encoder
    if _length_slot(encoder) is None:
        raise OpticalError(f"--doc-max-length: encoder {encoder.name!r} has no adjustable max length")
    limit = _position_limit(encoder)
    if limit is not None and max_length > limit:
        raise OpticalError(f"--doc-max-length {max_length}: encoder {encoder.name!r} has only "
                           f"{limit} positions")
    return _LengthLimited(encoder, max_length)


def _document_prompt(encoder) -> str:
    """The prompt sentence-transformers prepends on this side (as ``encode_document`` picks it)."""
    model = getattr(encoder, "model", None)
    prompts = getattr(model, "prompts", None) or {}
    if getattr(encoder, "role", "document") == "query":
        return prompts.get("query") or ""
    for name in ("document", "passage", "corpus"):
        if prompts.get(name):
            return prompts[name]
    return prompts.get(getattr(model, "default_prompt_name", None)) or ""


def _check_window_fits(encoder, tokenizer, spec: PassageSpec) -> None:
    limit = max_tokens(encoder)
    if tokenizer is None or not limit or limit >= MAX_TOKENS:
        return
    count_special = getattr(tokenizer, "num_special_tokens_to_add", None)
    special = count_special(pair=False) if count_special else 0
    prompt = _document_prompt(encoder)
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
    if spec.window + special + prompt_tokens > limit:
        raise OpticalError(f"--passages {spec}: a window of {spec.window} tokens + {special} special "
                           f"+ {prompt_tokens} prompt tokens exceeds the max length {limit} of "
                           f"{encoder.name!r}; use WINDOW ≤ {limit - special - prompt_tokens} "
                           f"or raise --doc-max-length")
