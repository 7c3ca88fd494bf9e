"""Image–caption retrieval: a student's captions against the CLIP teacher's image tower.

The evaluation of Crossmodal-3600, KTVIC and UIT-OpenViIC style sets: images are encoded
by the CLIP teacher's image tower, captions in the target language by the student
(trained into the CLIP text space with `--teacher clip`), and retrieval is scored both
ways with Recall@1/5/10 and their mean. The teacher on the English captions of the same
images is the upper bound; the gap says how much of it the student recovers.

Input: a JSONL file, one image a line,
`{"image": "images/0001.jpg", "captions": {"vi": ["...", ...], "en": ["...", ...]}}`,
image paths relative to the JSONL file's folder (`data_prep/captions.py` writes it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optical.data.jsonl import read_jsonl
from optical.errors import OpticalError, where

KS = (1, 5, 10)


@dataclass
class CaptionSet:
    """images: [n_images] paths; captions: {lang: texts}; owner: {lang: [n_captions] image index}."""

    path: Path
    images: list[Path]
    captions: dict[str, list[str]]
    owner: dict[str, np.ndarray]

    def has(self, lang: str) -> bool:
        return lang in self.captions


def load_captions(jsonl: str | Path, lang: str, english: str | None = "en") -> CaptionSet:
    """Read a captions JSONL; every image must have captions in `lang`. English captions are
    kept only when every image has them (otherwise the upper bound is not comparable)."""
    path = Path(jsonl)
    if not path.is_file():
        raise OpticalError(f"{path}: captions file not found")
    images: list[Path] = []
    texts: dict[str, list[str]] = {lang: []}
    owners: dict[str, list[int]] = {lang: []}
    english_ok = english is not None and english != lang
    if english_ok:
        texts[english], owners[english] = [], []
    for number, record in read_jsonl(path):
        here = where(path, number)
        if not isinstance(record.get("image"), str):
            raise OpticalError(f"{here}: image: expected an object with an \"image\" path")
        captions = record.get("captions")
        if not isinstance(captions, dict):
            raise OpticalError(f"{here}: captions: expected a mapping language → list of captions")
        image = Path(record["image"])
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            raise OpticalError(f"{here}: image: file not found: {image}")
        index = len(images)
        images.append(image)
        for code in list(texts):
            found = captions.get(code)
            if isinstance(found, str):
                found = [found]
            found = [c for c in found or [] if isinstance(c, str) and c.strip()]
            if not found:
                if code == lang:
                    raise OpticalError(f"{here}: captions.{lang}: no captions in language {lang!r} "
                                       f"(has: {', '.join(captions) or 'none'})")
                english_ok = False
                continue
            texts[code].extend(found)
            owners[code].extend([index] * len(found))
    if not images:
        raise OpticalError(f"{path}: no images")
    if english is not None and english != lang and not english_ok:
        texts.pop(english, None)
        owners.pop(english, None)
    return CaptionSet(path, images, texts, {k: np.asarray(v, dtype=np.int64) for k, v in owners.items()})


def caption_recall(similarity: np.ndarray, owner: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Recall@K both ways from caption–image similarities.

    | arg | shape | meaning |
    |---|---|---|
    | similarity | [n_captions, n_images] | score of caption c for image i |
    | owner | [n_captions] | index of the image caption c describes |

    text→image: a caption is a hit if its image ranks in the top K images. image→text: an
    image is a hit if any of its captions ranks in the top K captions (the Crossmodal-3600
    convention for images with several captions). Ties rank in index order.
    Returns t2i_R@K, i2t_R@K (percent) and mean_recall (mean of all of them).
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    owner = np.asarray(owner)
    n_captions, n_images = similarity.shape
    if len(owner) != n_captions:
        raise ValueError(f"owner has {len(owner)} entries for {n_captions} captions")
    # rank of each caption's own image: how many images score strictly higher, plus ties before it
    own = similarity[np.arange(n_captions), owner]
    higher = (similarity > own[:, None]).sum(1)
    ties_before = ((similarity == own[:, None]) & (np.arange(n_images)[None, :] < owner[:, None])).sum(1)
    text_rank = higher + ties_before
    # image → text: best rank among the image's captions
    order = np.argsort(-similarity.T, axis=1, kind="stable")  # [n_images, n_captions]
    hit_rank = np.full(n_images, n_captions, dtype=np.int64)
    for i in range(n_images):
        ranks = np.nonzero(owner[order[i]] == i)[0]
        if len(ranks):
            hit_rank[i] = ranks[0]
    metrics = {}
    for k in ks:
        metrics[f"t2i_R@{k}"] = 100.0 * float((text_rank < k).mean())
    for k in ks:
        metrics[f"i2t_R@{k}"] = 100.0 * float((hit_rank < k).mean())
    metrics["mean_recall"] = float(np.mean(list(metrics.values())))
    return metrics


def _text_encoder(student):
    """A student spec (run dir, student folder, hub id) or anything with `.encode` → encoder."""
    if not isinstance(student, (str, Path)) and hasattr(student, "encode"):  # str has .encode too
        return student
    from optical.models.sources import resolve_model
    from optical.models.student import load_sentence_transformer

    path = Path(str(student))
    if (path / "student" / "modules.json").is_file():  # an `optical distill` run directory
        path = path / "student"
    spec = str(path) if path.exists() else resolve_model(str(student))
    try:
        return load_sentence_transformer(spec, device="cpu")
    except OSError as err:
        raise OpticalError(f"cannot load student {student!r}: {str(err).splitlines()[0]}") from None


def _name_of(student) -> str:
    if isinstance(student, (str, Path)):
        return str(student)
    return str(getattr(student, "name", type(student).__name__))


def _encode(encoder, texts: list[str], batch_size: int) -> np.ndarray:
    kwargs = {"normalize_embeddings": True} if type(encoder).__name__ == "SentenceTransformer" else {}
    out = np.asarray(encoder.encode(texts, batch_size=batch_size, **kwargs), dtype=np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)


def evaluate_captions(jsonl: str | Path, student, teacher_model: str | None = None, lang: str = "vi",
                      out_dir: str | Path | None = None, batch_size: int = 64, english: str | None = "en",
                      show_progress: bool = False) -> dict:
    """Image–caption retrieval of `student` (target-language captions) against the CLIP
    teacher's images, plus the teacher on English captions as upper bound.

    `student`: run directory, sentence-transformers folder, hub id, or an object with
    `encode(texts, batch_size) -> [n, D]`. `teacher_model`: CLIP hub id / path / packaged:NAME
    (None: the default CLIP). Writes metrics.json and report.md to `out_dir` when given.
    """
    from optical.models.teacher import load_teacher

    data = load_captions(jsonl, lang, english)
    teacher = load_teacher("clip", teacher_model)
    image_emb = teacher.encode_images(data.images, batch_size=batch_size, show_progress=show_progress)
    caption_emb = _encode(_text_encoder(student), data.captions[lang], batch_size)
    if caption_emb.shape[1] != image_emb.shape[1]:
        raise OpticalError(f"student embeddings have {caption_emb.shape[1]} dimensions, the CLIP image space "
                           f"{image_emb.shape[1]}: distill the student with --teacher clip from the same CLIP model")
    student_metrics = caption_recall(caption_emb @ image_emb.T, data.owner[lang])
    teacher_metrics = gap = None
    if english and english != lang and data.has(english):
        english_emb = teacher.encode(data.captions[english], batch_size=batch_size)
        teacher_metrics = caption_recall(english_emb @ image_emb.T, data.owner[english])
        gap = {k: teacher_metrics[k] - student_metrics[k] for k in student_metrics}
    report = {
        "task": "captions", "path": str(data.path), "lang": lang,
        "n_images": len(data.images), "n_captions": len(data.captions[lang]),
        "student": _name_of(student), "teacher": teacher.name,
        "metrics": student_metrics, "teacher_en": teacher_metrics, "gap": gap,
    }
    if out_dir is not None:
        from optical.files import atomic_write_text

        out = Path(out_dir)
        atomic_write_text(out / "metrics.json", json.dumps(report, indent=2))
        atomic_write_text(out / "report.md", format_captions_report(report))
    return report


def format_captions_report(report: dict) -> str:
    """Markdown: one row per metric, student vs English teacher and the gap."""
    lines = [f"# Image–caption retrieval: {report['lang']}", "",
             f"- data: `{report['path']}` ({report['n_images']} images, {report['n_captions']} captions)",
             f"- student: `{report['student']}`", f"- images and English upper bound: `{report['teacher']}`", "",
             f"| metric | student ({report['lang']}) | teacher (en) | gap |", "|---|---:|---:|---:|"]
    teacher, gap = report.get("teacher_en"), report.get("gap")
    for key, value in report["metrics"].items():
        t = f"{teacher[key]:.2f}" if teacher else "–"
        g = f"{gap[key]:+.2f}" if gap else "–"
        lines.append(f"| {key} | {value:.2f} | {t} | {g} |")
    if not teacher:
        lines += ["", "No English captions for every image: no upper bound."]
    return "\n".join(lines) + "\n"
