"""Image–caption retrieval: recall on hand-made similarities, input errors, and a tiny CLIP
run end to end (distill a student from CLIP, then retrieve images with its captions)."""

import json

import numpy as np
import pytest

from optical.eval.captions import caption_recall, evaluate_captions, format_captions_report, load_captions
from optical.errors import OpticalError
from tiny_models import BITEXT_VI

PAIRS = [line.split("\t") for line in BITEXT_VI.read_text(encoding="utf-8").splitlines() if "\t" in line]


def write_images(folder, n, seed=0):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def write_captions(tmp_path, n=12, per_image=2, english=True, same_text=False):
    """JSONL with n images; image i gets `per_image` Vietnamese (and English) captions."""
    write_images(tmp_path / "images", n)
    lines = []
    for i in range(n):
        pairs = [PAIRS[(i * per_image + j) % len(PAIRS)] for j in range(per_image)]
        captions = {"vi": [en if same_text else vi for en, vi in pairs]}
        if english:
            captions["en"] = [en for en, _ in pairs]
        lines.append(json.dumps({"image": f"images/img{i:02d}.png", "captions": captions}, ensure_ascii=False))
    path = tmp_path / "captions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ recall on known answers


def test_recall_one_caption_per_image():
    # caption c belongs to image c; caption 0 ranks its image 1st, caption 1 ranks it 2nd,
    # caption 2 ranks it last (3rd)
    sim = np.array([[0.9, 0.1, 0.0],
                    [0.8, 0.5, 0.1],
                    [0.7, 0.6, 0.2]])
    m = caption_recall(sim, np.array([0, 1, 2]), ks=(1, 2, 3))
    assert m["t2i_R@1"] == pytest.approx(100 / 3) and m["t2i_R@2"] == pytest.approx(200 / 3)
    assert m["t2i_R@3"] == 100
    # image→text: image 0's best caption column: [0.9, 0.8, 0.7] → own caption 0 first;
    # image 1: [0.1, 0.5, 0.6] → own caption 1 second; image 2: [0.0, 0.1, 0.2] → own caption first
    assert m["i2t_R@1"] == pytest.approx(200 / 3) and m["i2t_R@2"] == 100
    assert m["mean_recall"] == pytest.approx(np.mean([100 / 3, 200 / 3, 100, 200 / 3, 100, 100]))


def test_recall_several_captions_per_image_counts_any_caption_for_image_to_text():
    # 2 images, captions 0,1 → image 0; captions 2,3 → image 1
    owner = np.array([0, 0, 1, 1])
    sim = np.array([[0.2, 0.9],   # caption 0 prefers the wrong image
                    [0.8, 0.1],   # caption 1 right
                    [0.3, 0.7],   # caption 2 right
                    [0.6, 0.5]])  # caption 3 wrong
    m = caption_recall(sim, owner, ks=(1, 2))
    assert m["t2i_R@1"] == 50 and m["t2i_R@2"] == 100
    # image 0 ranks captions [1 (0.8), 3, 2, 0] → own caption first: hit@1
    # image 1 ranks captions [0 (0.9), 2 (0.7), 3, 1] → first own caption at rank 2
    assert m["i2t_R@1"] == 50 and m["i2t_R@2"] == 100


def test_recall_identity_is_perfect_and_ties_are_not_hits_for_free():
    assert caption_recall(np.eye(20), np.arange(20))["mean_recall"] == 100
    flat = caption_recall(np.zeros((20, 20)), np.arange(20), ks=(1, 5))
    assert flat["t2i_R@1"] == 5 and flat["t2i_R@5"] == 25  # ties ranked by index, not all "first"


# ------------------------------------------------------------------ input errors


def test_loader_reads_captions_and_owners(tmp_path):
    data = load_captions(write_captions(tmp_path, n=3, per_image=2), "vi")
    assert len(data.images) == 3 and len(data.captions["vi"]) == 6 and len(data.captions["en"]) == 6
    assert data.owner["vi"].tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("line, message", [
    ('{"image": "images/img00.png", "captions": {"vi": ["a"]}', ":2: invalid JSON"),
    ('{"image": "images/nope.png", "captions": {"vi": ["a"]}}', ":2: image: file not found"),
    ('{"image": "images/img00.png", "captions": {"en": ["a"]}}', ":2: captions.vi: no captions in language 'vi'"),
    ('{"captions": {"vi": ["a"]}}', ":2: image: expected an object"),
    ('{"image": "images/img00.png", "captions": ["a"]}', ":2: captions: expected a mapping"),
])
def test_bad_input_names_file_and_line(tmp_path, line, message):
    path = write_captions(tmp_path, n=1, per_image=1)
    path.write_text(path.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
    with pytest.raises(OpticalError) as err:
        load_captions(path, "vi")
    assert f"captions.jsonl{message}" in str(err.value)


def test_missing_english_on_some_image_drops_the_upper_bound(tmp_path):
    path = write_captions(tmp_path, n=2, per_image=1)
    path.write_text(path.read_text(encoding="utf-8")
                    + '{"image": "images/img00.png", "captions": {"vi": ["một"]}}\n', encoding="utf-8")
    assert not load_captions(path, "vi").has("en")


# ------------------------------------------------------------------ end to end on tiny CLIP


def test_teacher_as_student_on_english_captions_has_zero_gap(tmp_path, tiny_clip):
    from optical.models.teacher import load_teacher

    path = write_captions(tmp_path, n=10, per_image=2, same_text=True)  # "vi" captions are the English ones
    report = evaluate_captions(path, load_teacher("clip", str(tiny_clip)), str(tiny_clip), "vi", batch_size=4)
    assert report["metrics"] == pytest.approx(report["teacher_en"])
    assert all(abs(v) < 1e-9 for v in report["gap"].values())


def test_clip_distilled_student_lives_in_the_image_space(tmp_path, tiny_clip, tiny_student, bitext_tsv):
    """`--teacher clip` distillation gives a student whose output dim is CLIP's projection dim,
    and captions retrieval with it runs end to end and writes its report."""
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPConfig

    from optical.recipe import recipe_from_dict
    from optical.training.loop import distill

    recipe = recipe_from_dict({"lang": "vi", "teacher": {"kind": "clip", "model": str(tiny_clip)},
                               "student": {"model": str(tiny_student)}, "bitext": {"path": str(bitext_tsv)},
                               "loss": [{"name": "sigrot"}, {"name": "infonce", "weight": 0.1}],
                               "output_dir": str(tmp_path / "run")},
                              ["train.steps=3", "train.batch_size=8", "bitext.heldout=8", "train.lr=1e-3"])
    run = distill(recipe, show_progress=False)
    projection_dim = CLIPConfig.from_pretrained(tiny_clip).projection_dim
    assert SentenceTransformer(str(run.student_dir), trust_remote_code=True).encode(["Con mèo"]).shape == (1, projection_dim)

    path = write_captions(tmp_path / "data", n=12, per_image=2)
    out = tmp_path / "eval"
    report = evaluate_captions(path, run.run_dir, str(tiny_clip), "vi", out_dir=out, batch_size=8)
    assert report["n_images"] == 12 and report["n_captions"] == 24
    keys = {f"{d}_R@{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)} | {"mean_recall"}
    assert set(report["metrics"]) == keys and set(report["teacher_en"]) == keys
    assert all(0 <= v <= 100 for v in report["metrics"].values())
    assert report["metrics"]["t2i_R@10"] >= report["metrics"]["t2i_R@5"] >= report["metrics"]["t2i_R@1"]
    assert json.loads((out / "metrics.json").read_text())["gap"] == report["gap"]
    assert "| t2i_R@1 |" in (out / "report.md").read_text() == format_captions_report(report)


def test_student_from_another_teacher_space_is_a_clear_error(tmp_path, tiny_clip, tiny_teacher_st):
    path = write_captions(tmp_path, n=2, per_image=1)
    with pytest.raises(OpticalError, match="distill the student with --teacher clip"):
        evaluate_captions(path, str(tiny_teacher_st), str(tiny_clip), "vi")


def test_eval_cli_captions_uses_the_runs_clip_teacher(tmp_path, tiny_clip, tiny_student, bitext_tsv):
    """`optical distill --teacher clip` then `optical eval --task captions` through the CLI."""
    from typer.testing import CliRunner

    from optical.cli import app

    runner = CliRunner()
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["distill", "--teacher", "clip", "--teacher-model", str(tiny_clip), "--lang", "vi",
                                 "--bitext", str(bitext_tsv), "--student", str(tiny_student), "--out", str(run_dir),
                                 "--steps", "2", "--set", "train.batch_size=8", "--set", "bitext.heldout=8",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    path = write_captions(tmp_path / "data", n=6, per_image=1)
    result = runner.invoke(app, ["eval", "--task", "captions", "--path", str(path), "--lang", "vi",
                                 "--student", str(run_dir), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "t2i_R@1" in result.output and (tmp_path / "eval" / "metrics.json").is_file()
    missing = runner.invoke(app, ["eval", "--task", "captions", "--student", str(run_dir)])
    assert missing.exit_code == 2 and "needs --path" in missing.output
