"""Image-caption sets → optical's captions JSONL (the input of `optical.eval.captions`).

Output, one image a line, image paths relative to the output file's folder:
``{"image": "images/0001.jpg", "captions": {"vi": ["...", ...], "en": ["...", ...]}}``

| source | input layout |
|---|---|
| Crossmodal-3600 | ``captions.jsonl``: one image a line, ``{"image/key": "<id>", "<lang>": {"caption": [...], ...}, ...}``; images in ``images/<id>.jpg`` |
| KTVIC, UIT-OpenViIC, UIT-ViIC (COCO style) | one JSON file: ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``, ``caption``) |

For a COCO-style set an English COCO-style file may be given for the upper bound; its
captions are paired with the target-language images by ``file_name`` (base name), the key
UIT-ViIC shares with MS-COCO.

Run as ``python -m data_prep.captions xm3600 --captions captions.jsonl --images images/
--langs vi,en --out data/xm3600_vi/captions.jsonl`` or ``python -m data_prep.captions coco
--annotations ktvic_test.json --images images/ --lang vi [--english coco_en.json] --out ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from data_prep.clean import run_cli
from optical.data.jsonl import read_jsonl
from optical.errors import OpticalError, where


def _relative(image: Path, out: Path) -> str:
    return Path(os.path.relpath(image.resolve(), out.parent.resolve())).as_posix()


def _write(records: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _clean(captions) -> list[str]:
    if isinstance(captions, str):
        captions = [captions]
    return [" ".join(c.split()) for c in captions or [] if isinstance(c, str) and c.strip()]


def crossmodal3600_to_jsonl(captions_jsonl: str | Path, images_dir: str | Path, out: str | Path,
                            langs: tuple[str, ...] = ("vi", "en"), image_ext: str = ".jpg",
                            missing_image: str = "error") -> dict:
    """Crossmodal-3600 ``captions.jsonl`` → captions JSONL with the captions of `langs`.

    An image without captions in the first language of `langs` is an error (file:line); other
    languages are optional per image. `missing_image`: "error" or "skip" a key whose image file
    is not in `images_dir`. Returns counts.
    """
    source, images_dir, out = Path(captions_jsonl), Path(images_dir), Path(out)
    if not source.is_file():
        raise OpticalError(f"{source}: Crossmodal-3600 captions file not found")
    records, skipped = [], 0
    for number, row in read_jsonl(source):
        here = where(source, number)
        if not isinstance(row.get("image/key"), str):
            raise OpticalError(f"{here}: image/key: missing")
        image = images_dir / f"{row['image/key']}{image_ext}"
        if not image.is_file():
            if missing_image == "skip":
                skipped += 1
                continue
            raise OpticalError(f"{here}: image file not found: {image}")
        captions = {}
        for lang in langs:
            entry = row.get(lang)
            texts = _clean(entry.get("caption") if isinstance(entry, dict) else None)
            if texts:
                captions[lang] = texts
        if langs[0] not in captions:
            raise OpticalError(f"{here}: {langs[0]}.caption: no captions in language {langs[0]!r}")
        records.append({"image": _relative(image, out), "captions": captions})
    if not records:
        raise OpticalError(f"{source}: no images with captions")
    _write(records, out)
    return {"images": len(records), "skipped_missing_images": skipped,
            "captions": {lang: sum(len(r["captions"].get(lang, [])) for r in records) for lang in langs}}


def _read_coco(path: Path) -> tuple[dict[int, str], dict[int, list[str]]]:
    """COCO-style captions file → ({image id: file_name}, {image id: captions})."""
    if not path.is_file():
        raise OpticalError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise OpticalError(f"{where(path, err.lineno)}: invalid JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise OpticalError(f"{path}: expected a COCO-style object with 'images' and 'annotations' lists")
    files: dict[int, str] = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise OpticalError(f"{path}: images.{i}: expected 'id' and 'file_name'")
        files[image["id"]] = image["file_name"]
    captions: dict[int, list[str]] = {}
    for i, note in enumerate(data["annotations"]):
        if not isinstance(note, dict) or "image_id" not in note or not isinstance(note.get("caption"), str):
            raise OpticalError(f"{path}: annotations.{i}: expected 'image_id' and 'caption'")
        if note["image_id"] not in files:
            raise OpticalError(f"{path}: annotations.{i}: image_id {note['image_id']!r} is not in 'images'")
        captions.setdefault(note["image_id"], []).extend(_clean(note["caption"]))
    return files, captions


def coco_to_jsonl(annotations: str | Path, images_dir: str | Path, out: str | Path, lang: str = "vi",
                  english: str | Path | None = None, missing_image: str = "error") -> dict:
    """KTVIC / UIT-OpenViIC / UIT-ViIC COCO-style captions (+ optional English COCO file) →
    captions JSONL. Images without captions are dropped; English is joined on file base name."""
    annotations, images_dir, out = Path(annotations), Path(images_dir), Path(out)
    files, captions = _read_coco(annotations)
    english_by_name: dict[str, list[str]] = {}
    if english is not None:
        en_files, en_captions = _read_coco(Path(english))
        for image_id, texts in en_captions.items():
            english_by_name.setdefault(Path(en_files[image_id]).name, []).extend(texts)
    records, skipped, with_english = [], 0, 0
    for image_id, file_name in files.items():
        texts = captions.get(image_id)
        if not texts:
            continue
        image = images_dir / file_name
        if not image.is_file():
            if missing_image == "skip":
                skipped += 1
                continue
            raise OpticalError(f"{annotations}: image {image_id!r}: file not found: {image}")
        record = {"image": _relative(image, out), "captions": {lang: texts}}
        en_texts = english_by_name.get(Path(file_name).name)
        if en_texts:
            record["captions"]["en"] = en_texts
            with_english += 1
        records.append(record)
    if not records:
        raise OpticalError(f"{annotations}: no images with captions")
    _write(records, out)
    return {"images": len(records), "with_english": with_english, "skipped_missing_images": skipped,
            "captions": sum(len(r["captions"][lang]) for r in records)}


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data_prep.captions",
                                     description="Write optical's image-captions JSONL from public caption sets.")
    sub = parser.add_subparsers(dest="source", required=True)
    xm = sub.add_parser("xm3600", help="Crossmodal-3600 captions.jsonl + images/")
    xm.add_argument("--captions", type=Path, required=True, help="Crossmodal-3600 captions.jsonl")
    xm.add_argument("--images", type=Path, required=True, help="folder with <image/key>.jpg")
    xm.add_argument("--langs", default="vi,en", help="languages to keep, target first (default vi,en)")
    coco = sub.add_parser("coco", help="KTVIC / UIT-OpenViIC style COCO captions JSON")
    coco.add_argument("--annotations", type=Path, required=True, help="COCO-style captions JSON")
    coco.add_argument("--images", type=Path, required=True, help="folder the file_name entries are relative to")
    coco.add_argument("--lang", default="vi", help="language code of the captions (default vi)")
    coco.add_argument("--english", type=Path, help="English COCO-style captions of the same images (upper bound)")
    for p in (xm, coco):
        p.add_argument("--out", type=Path, required=True, help="captions JSONL to write")
        p.add_argument("--skip-missing-images", action="store_true", help="skip images not on disk")
    args = parser.parse_args(argv)
    missing = "skip" if args.skip_missing_images else "error"
    if args.source == "xm3600":
        langs = tuple(code.strip() for code in args.langs.split(",") if code.strip())
        stats = crossmodal3600_to_jsonl(args.captions, args.images, args.out, langs, missing_image=missing)
    else:
        stats = coco_to_jsonl(args.annotations, args.images, args.out, args.lang, args.english, missing)
    print(f"{args.source}: {json.dumps(stats)} -> {args.out}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
