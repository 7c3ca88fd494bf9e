"""data_prep.captions: Crossmodal-3600 and COCO-style (KTVIC / UIT-OpenViIC) → captions JSONL."""

import json

import pytest

from data_prep.captions import coco_to_jsonl, crossmodal3600_to_jsonl, main
from optical.eval.captions import load_captions
from optical.errors import OpticalError


def touch_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"\x89PNG fake")  # the converters only check existence


def xm3600_line(key, vi, en):
    return json.dumps({"image/key": key, "image/locale": "vi",
                       "vi": {"caption": vi, "caption/tokenized": vi},
                       "en": {"caption": en, "caption/tokenized": en}}, ensure_ascii=False)


def test_crossmodal3600_keeps_languages_and_relative_paths(tmp_path):
    touch_images(tmp_path / "xm" / "images", ["a1.jpg", "b2.jpg"])
    source = tmp_path / "xm" / "captions.jsonl"
    source.write_text(xm3600_line("a1", ["con mèo", "  một con mèo  "], ["a cat"]) + "\n"
                      + xm3600_line("b2", ["con chó"], []) + "\n", encoding="utf-8")
    out = tmp_path / "data" / "xm_vi.jsonl"
    stats = crossmodal3600_to_jsonl(source, tmp_path / "xm" / "images", out, ("vi", "en"))
    assert stats["images"] == 2 and stats["captions"] == {"vi": 3, "en": 1}
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records[0] == {"image": "../xm/images/a1.jpg", "captions": {"vi": ["con mèo", "một con mèo"],
                                                                       "en": ["a cat"]}}
    assert "en" not in records[1]["captions"]
    data = load_captions(out, "vi")  # the evaluation reads it
    assert data.images[0].resolve() == (tmp_path / "xm" / "images" / "a1.jpg").resolve()
    assert not data.has("en")  # one image lacks English: no upper bound


def test_crossmodal3600_errors_and_skips(tmp_path):
    touch_images(tmp_path / "images", ["a1.jpg"])
    source = tmp_path / "captions.jsonl"
    source.write_text(xm3600_line("a1", ["x"], ["y"]) + "\n" + xm3600_line("zz", ["x"], ["y"]) + "\n")
    with pytest.raises(OpticalError, match=r"captions.jsonl:2: image file not found"):
        crossmodal3600_to_jsonl(source, tmp_path / "images", tmp_path / "out.jsonl")
    stats = crossmodal3600_to_jsonl(source, tmp_path / "images", tmp_path / "out.jsonl", missing_image="skip")
    assert stats["images"] == 1 and stats["skipped_missing_images"] == 1
    source.write_text(xm3600_line("a1", [], ["y"]) + "\n{broken\n")
    with pytest.raises(OpticalError, match=r"captions.jsonl:1: vi.caption: no captions"):
        crossmodal3600_to_jsonl(source, tmp_path / "images", tmp_path / "out.jsonl")


def coco(images, annotations):
    return {"info": {}, "images": images, "annotations": annotations}


def test_coco_style_with_english_paired_by_file_name(tmp_path):
    touch_images(tmp_path / "images", ["COCO_val2014_1.jpg", "COCO_val2014_2.jpg", "COCO_val2014_3.jpg"])
    vi = tmp_path / "uitviic_vi.json"
    vi.write_text(json.dumps(coco(
        [{"id": 1, "file_name": "COCO_val2014_1.jpg"}, {"id": 2, "file_name": "COCO_val2014_2.jpg"},
         {"id": 3, "file_name": "COCO_val2014_3.jpg"}],
        [{"id": 10, "image_id": 1, "caption": "Một người đàn ông chơi tennis."},
         {"id": 11, "image_id": 1, "caption": "Người chơi quần vợt."},
         {"id": 12, "image_id": 2, "caption": "Hai con chó."}]), ensure_ascii=False), encoding="utf-8")
    en = tmp_path / "coco_en.json"  # other ids, same file names
    en.write_text(json.dumps(coco([{"id": 501, "file_name": "val2014/COCO_val2014_1.jpg"}],
                                  [{"id": 1, "image_id": 501, "caption": "A man playing tennis."}])))
    out = tmp_path / "out" / "captions.jsonl"
    assert main(["coco", "--annotations", str(vi), "--images", str(tmp_path / "images"), "--lang", "vi",
                 "--english", str(en), "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 2  # image 3 has no captions
    assert records[0]["captions"] == {"vi": ["Một người đàn ông chơi tennis.", "Người chơi quần vợt."],
                                      "en": ["A man playing tennis."]}
    assert records[1]["captions"] == {"vi": ["Hai con chó."]}
    assert load_captions(out, "vi").owner["vi"].tolist() == [0, 0, 1]


def test_coco_style_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(coco([{"id": 1, "file_name": "x.jpg"}], [{"image_id": 2, "caption": "c"}])))
    with pytest.raises(OpticalError, match="annotations.0: image_id 2 is not in 'images'"):
        coco_to_jsonl(bad, tmp_path, tmp_path / "o.jsonl")
    bad.write_text('{"images": [\n  {"id": 1,, }]}')
    assert main(["coco", "--annotations", str(bad), "--images", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "bad.json:2: invalid JSON" in capsys.readouterr().err
