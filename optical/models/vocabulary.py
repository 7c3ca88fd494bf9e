"""Vocabulary extension: tokens for the words a student's tokenizer cannot read.

A multilingual tokenizer without pieces for a script hands the encoder one and the same
`<unk>` for most of a sentence (XLM-R's vocabulary, shared by multilingual-e5, turns 46 % of
the Dzongkha help's tokens into `<unk>`), and no loss can teach a student to read symbols its
tokenizer erases. `extend_vocabulary` adds the target language's most frequent *units* that
tokenise to `<unk>` as new tokens, and initialises their input embeddings in closed form from
the bitext:

    for every pair i:  mean of the target sentence's token embeddings  ≈  ȳ_i,
    ȳ_i = mean of the student's own embeddings of the English sentence's tokens,

a ridge regression over the new rows only (the old rows stay as they are), shrunk towards the
mean embedding. A new token thereby starts where the English words it co-occurs with are, in
the student's own input space: the untrained student reads the language as a bag of
translated words before any distillation step (docs/results.md, "Dzongkha").

A unit is a run of letters, marks and digits plus one trailing punctuation mark, so that a
syllable of a script that marks syllables (Tibetan's tsheg ་) is one unit and a word of a
script that uses spaces is one unit.

    >>> text_units("བཀྲ་ཤིས་ བདེ་ལེགས།")
    ['བཀྲ་', 'ཤིས་', 'བདེ་', 'ལེགས།']
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass

import torch

#: `student.new_tokens: auto` extends the vocabulary above this share of unknown target tokens
AUTO_UNKNOWN_SHARE = 0.01
#: ... by at most this many tokens (Dzongkha help: 2,192 units occur twice or more)
AUTO_MAX_NEW_TOKENS = 8000
#: a unit must occur this often in the bitext to get a token (a single sighting fits nothing)
MIN_COUNT = 2
#: ridge of the closed-form embedding fit, towards the mean embedding, chosen on dz's dev pages:
#: 1e-3, 1e-2, 0.1, 1 gave 0.868, 0.875, 0.882, 0.873 nDCG@10 (python -m experiments.vocabulary_probe)
EMBEDDING_RIDGE = 0.1


@dataclass
class VocabularyReport:
    """What `extend_vocabulary` did; `unknown_before/after`: the share of `<unk>` target tokens."""

    added: int
    candidates: int  # units that tokenise to <unk> and occur at least MIN_COUNT times
    unknown_before: float
    unknown_after: float
    fit_residual: float | None  # ‖A·X − r‖ / ‖r‖ of the embedding fit (None: nothing added)

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def token_counts(tokenizer, texts: list[str], max_length: int, prefix: str = "", batch: int = 4096) -> tuple[int, float]:
    """One tokenisation pass over `texts`: how many have more tokens (specials included) than
    `max_length` and get cut, and the share of their tokens (specials left out) that are the
    tokenizer's unknown token, i.e. how much of a language the vocabulary cannot represent.

    Example: multilingual-e5-small on the Dzongkha help bitext: share 0.46; on the Vietnamese one: 0.0."""
    specials, unk = tokenizer.num_special_tokens_to_add(), tokenizer.unk_token_id
    over = total = unknown = 0
    for start in range(0, len(texts), batch):
        ids = tokenizer([prefix + t for t in texts[start:start + batch]], truncation=False, verbose=False)["input_ids"]
        over += sum(len(x) > max_length for x in ids)
        total += sum(len(x) - specials for x in ids)
        if unk is not None:
            unknown += sum(x.count(unk) for x in ids)
    return over, (unknown / total if total else 0.0)


def unknown_token_share(tokenizer, texts: list[str], prefix: str = "") -> float:
    """Share of the tokens of `texts` (specials left out) that are the tokenizer's unknown token."""
    return token_counts(tokenizer, texts, max_length=0, prefix=prefix)[1]


def text_units(text: str) -> list[str]:
    """Runs of letters, marks and digits, each with the punctuation mark that ends it."""
    units, current = [], []
    for char in text:
        kind = unicodedata.category(char)[0]
        if kind in "LMN":
            current.append(char)
            continue
        if kind == "P" and current:
            current.append(char)  # tsheg, shad, a full stop: part of the syllable before it
        if current:
            units.append("".join(current))
        current = []
    if current:
        units.append("".join(current))
    return units


def unknown_units(tokenizer, texts: list[str], min_count: int = MIN_COUNT) -> list[tuple[str, int]]:
    """Units of `texts` (normalised as the tokenizer normalises) that hold an `<unk>` token,
    with their counts, most frequent first."""
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    normalize = normalizer.normalize_str if normalizer is not None else (lambda s: s)
    counts = Counter(u for text in texts for u in text_units(normalize(text)))
    frequent = [u for u, c in counts.items() if c >= min_count]
    unk = tokenizer.unk_token_id
    if unk is None or not frequent:
        return []
    ids = tokenizer(frequent, add_special_tokens=False, verbose=False)["input_ids"]
    unreadable = [(u, counts[u]) for u, x in zip(frequent, ids) if unk in x]
    return sorted(unreadable, key=lambda uc: (-uc[1], uc[0]))  # ties by text: the same on every machine


def fit_new_embeddings(embeddings: torch.Tensor, n_old: int, target_ids: list[list[int]],
                       english_ids: list[list[int]], ridge: float = EMBEDDING_RIDGE) -> tuple[torch.Tensor, float]:
    """Closed-form input embeddings for the rows `n_old:` of `embeddings` [V, H].

    Minimises Σ_i ‖mean_{t ∈ target_i} E_t − mean_{t ∈ english_i} E_t‖² + ridge·‖E_new − μ‖²
    over the new rows E_new [V − n_old, H] (μ: the mean old row). Returns E_new and the
    relative residual of the fit."""
    k, hidden = embeddings.shape[0] - n_old, embeddings.shape[1]
    old = embeddings[:n_old].detach().double()
    mu = old.mean(0)
    # The normal equations (AᵀA + ridge·I) E_new = Aᵀr + ridge·μ, with A[i, j] the share of
    # sentence i's tokens that are new token j and r_i what its old tokens leave to explain;
    # AᵀA gathered sentence by sentence (a sentence holds few new tokens: no sparse matrices).
    gram_rows, gram_cols, gram_vals, owners, columns, shares, residual = [], [], [], [], [], [], []
    for target, english in zip(target_ids, english_ids):
        english = [t for t in english if t < n_old]
        new = Counter(t - n_old for t in target if t >= n_old)
        if not english or not new:
            continue
        known = [t for t in target if t < n_old]
        residual.append(old[english].mean(0) - (old[known].sum(0) if known else 0.0) / len(target))
        js, vs = list(new), [count / len(target) for count in new.values()]
        for j, v in zip(js, vs):
            gram_rows += [j] * len(js)
            gram_cols += js
            gram_vals += [v * w for w in vs]
        owners += [len(residual) - 1] * len(js)
        columns += js
        shares += vs
    if not residual:
        return mu.expand(k, hidden).to(embeddings.dtype).clone(), 1.0
    r = torch.stack(residual)  # [m, H]
    gram = ridge * torch.eye(k, dtype=torch.float64)
    gram.index_put_((torch.tensor(gram_rows), torch.tensor(gram_cols)), torch.tensor(gram_vals, dtype=torch.float64),
                    accumulate=True)
    share = torch.tensor(shares, dtype=torch.float64).unsqueeze(1)
    rhs = (ridge * mu).expand(k, hidden).clone().index_add_(0, torch.tensor(columns), share * r[owners])
    solution = torch.linalg.solve(gram, rhs)
    fitted = torch.zeros_like(r).index_add_(0, torch.tensor(owners), share * solution[columns])
    misfit = (fitted - r).norm() / r.norm().clamp_min(1e-12)
    return solution.to(embeddings.dtype), float(misfit)


def extend_vocabulary(student, pairs: list[tuple[str, str]], max_new: int | str = "auto",
                      ridge: float = EMBEDDING_RIDGE, unknown_share: float | None = None) -> VocabularyReport | None:
    """Give `student` tokens for the target-side units its tokenizer reads as `<unk>`.

    `pairs`: (english, other) sentences. `max_new`: "auto" (up to AUTO_MAX_NEW_TOKENS, only
    when more than AUTO_UNKNOWN_SHARE of the target tokens are unknown), 0 (never) or a
    number (up to that many whenever any unit is unknown). None when nothing was added.
    `unknown_share`: the target side's `unknown_token_share`, where the caller has measured it
    already (saves a tokenisation pass over the bitext).

    >>> report = extend_vocabulary(student, pairs)   # doctest: +SKIP
    >>> report.unknown_before, report.unknown_after  # dz help, e5-small    # doctest: +SKIP
    (0.4605, 0.0086)
    """
    if max_new == 0:
        return None
    tokenizer = student.tokenizer
    others = [p[1] for p in pairs]
    before = unknown_share if unknown_share is not None else unknown_token_share(tokenizer, others, student.prefix)
    if max_new == "auto":
        if before <= AUTO_UNKNOWN_SHARE:
            return None
        max_new = AUTO_MAX_NEW_TOKENS
    candidates = unknown_units(tokenizer, others)
    if not candidates:
        return None
    encoder = student.transformer.auto_model
    n_old = len(tokenizer)  # new tokens get the ids from here on
    added = tokenizer.add_tokens([u for u, _ in candidates[:int(max_new)]])
    # a matrix padded past the vocabulary (rows no id reaches) keeps its size if it has room
    rows = encoder.get_input_embeddings().weight.shape[0]
    encoder.resize_token_embeddings(max(rows, n_old + added), mean_resizing=False)
    weight = encoder.get_input_embeddings().weight
    target_ids = tokenizer(others, add_special_tokens=False, verbose=False)["input_ids"]
    english_ids = tokenizer([p[0] for p in pairs], add_special_tokens=False, verbose=False)["input_ids"]
    new_rows, misfit = fit_new_embeddings(weight[:n_old + added], n_old, target_ids, english_ids, ridge)
    with torch.no_grad():
        weight[n_old:n_old + added] = new_rows.to(weight.device)
    after = unknown_token_share(tokenizer, others, student.prefix)
    return VocabularyReport(added, len(candidates), before, after, misfit)


def added_tokens_identity(student, added: int) -> str:
    """A hash of the last `added` tokens of the student's vocabulary and their input embeddings
    (names the warm start's cache of an extended student)."""
    import hashlib

    tokenizer, weight = student.tokenizer, student.transformer.auto_model.get_input_embeddings().weight
    n = len(tokenizer)
    digest = hashlib.sha256("\n".join(tokenizer.convert_ids_to_tokens(list(range(n - added, n)))).encode())
    digest.update(weight[n - added:n].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
