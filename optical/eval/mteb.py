"""Results in MTEB's JSON layout, so leaderboards and MTEB tooling can read them.

One file per task, ``<out>/mteb/<task>.json``::

    {"task_name": "beir.clir", "mteb_version": null, "dataset_revision": null,
     "evaluation_time": 12.3, "kg_co2_emissions": null,
     "scores": {"test": [{"hf_subset": "vi", "languages": ["eng-Latn", "vie-Latn"],
                          "main_score": 0.78, "ndcg_at_10": 0.78, "map_at_100": ...}]},
     "optical": {"version": ..., "libraries": {...}, "settings": {...}}}

Metric names follow MTEB's retrieval scores (``nDCG@10`` → ``ndcg_at_10``, ``AP@100`` →
``map_at_100``, ``RR@10`` → ``mrr_at_10``, ``R@10`` → ``recall_at_10``, ``P@5`` →
``precision_at_5``); the main score is nDCG@10 when measured, else the first metric.

    >>> mteb_metric_name("nDCG@10"), mteb_metric_name("RR"), mteb_metric_name("R@100")
    ('ndcg_at_10', 'mrr', 'recall_at_100')
"""

from __future__ import annotations

import re

#: ISO 639-3 code and script of the languages the recipes and data_prep use
LANGUAGES = {"en": "eng-Latn", "vi": "vie-Latn", "hi": "hin-Deva", "bn": "ben-Beng", "sw": "swa-Latn",
             "eu": "eus-Latn", "om": "orm-Latn", "dz": "dzo-Tibt", "gl": "glg-Latn", "et": "est-Latn",
             "km": "khm-Khmr", "id": "ind-Latn", "fr": "fra-Latn", "de": "deu-Latn", "es": "spa-Latn",
             "zh": "zho-Hans", "ja": "jpn-Jpan", "ru": "rus-Cyrl", "ar": "arb-Arab"}

_NAMES = {"ndcg": "ndcg", "ap": "map", "rr": "mrr", "r": "recall", "p": "precision", "success": "success"}


def mteb_metric_name(measure: str) -> str:
    """ir-measures name → MTEB score key."""
    name, _, cutoff = str(measure).partition("@")
    key = _NAMES.get(name.lower(), re.sub(r"[^a-z0-9]+", "_", name.lower()))
    return f"{key}_at_{cutoff}" if cutoff else key


def mteb_language(code: str | None) -> str | None:
    return LANGUAGES.get(code, code) if code else None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("optical", "torch", "transformers", "sentence-transformers", "faiss-cpu", "faiss-gpu-cu12",
                 "ir-measures"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def mteb_result(task_name: str, entry: dict, settings: dict, seconds: float) -> dict:
    """One task's MTEB-style result from an `optical eval` task entry (metrics.json's `tasks`)."""
    metrics = entry["metrics"]
    scores = {mteb_metric_name(m): float(v) for m, v in metrics.items()}
    main = "nDCG@10" if "nDCG@10" in metrics else next(iter(metrics))
    lang = settings.get("lang")
    languages = [code for code in dict.fromkeys([mteb_language("en"), mteb_language(lang)]) if code]
    split = settings.get("split") or "test"
    return {"task_name": task_name, "mteb_version": None, "dataset_revision": None,
            "evaluation_time": round(seconds, 3), "kg_co2_emissions": None,
            "scores": {split: [{"hf_subset": lang or "default", "languages": languages,
                                "main_score": float(metrics[main]), **scores}]},
            "optical": {"versions": library_versions(), "settings": settings,
                        "query_encoder": entry.get("query_encoder"), "doc_encoder": entry.get("doc_encoder"),
                        "n_queries": entry.get("n_queries"), "corpus_size": entry.get("corpus_size")}}
