"""The saved student is Hub-ready: its model card (sentence-transformers' card data and
optical's section), the embeddings a plain SentenceTransformer gives, the card refreshed by
`optical card` and `optical eval RUN_DIR`, and `optical push` (checks, offline, the upload)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard
from sentence_transformers import SentenceTransformer
from typer.testing import CliRunner

import tiny_models
from tiny_models import one_error_line
from optical.publish.card import END, MODEL_ID_PLACEHOLDER, START, generate_card, refresh_card
from optical.cli import app
from optical.eval.encoders import SentenceTransformerEncoder
from optical.models.sources import folder_identity
from optical.models.student import Student
from optical.recipe import recipe_from_dict
from optical.training.loop import distill

runner = CliRunner()
TEXTS = ["Mở một tập tin.", "Open a file.", "Gỡ lỗi một Chương trình Basic", "x"]


@pytest.fixture(scope="module")
def run(tiny_teacher_st, tiny_student, tmp_path_factory):
    """A finished tiny run (with a prompt prefix, so every role has something to apply)."""
    out = tmp_path_factory.mktemp("card") / "run"
    recipe = recipe_from_dict({"name": "card-test", "teacher": {"model": str(tiny_teacher_st)},
                               "student": {"model": str(tiny_student), "prefix": "query: ", "max_length": 32},
                               "bitext": {"path": str(tiny_models.BITEXT_VI), "heldout": 8},
                               "output_dir": str(out)},
                              ["train.steps=4", "train.batch_size=8", "train.eval_every=2"])
    distill(recipe, show_progress=False)
    return out


@pytest.fixture()
def run_copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def card_of(run_dir):
    return ModelCard((Path(run_dir) / "student" / "README.md").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- the card


def test_finished_run_card_names_what_made_the_student(run, tiny_teacher_st, tiny_student):
    card = card_of(run)
    data = card.data.to_dict()
    assert data["language"] == ["en", "vi"] and data["library_name"] == "sentence-transformers"
    assert {"optical", "cross-lingual-retrieval", "sentence-transformers"} <= set(data["tags"])
    assert "license" not in data and "base_model" not in data  # a local folder: nothing to claim
    text = card.text
    assert text.count(START) == 1 and text.count(END) == 1
    section = text.split(START)[1].split(END)[0]
    rows = dict(re.findall(r"^\| ([^|]+?) \| (.+) \|$", section, flags=re.MULTILINE))
    assert str(tiny_student) in rows["base model (student)"] and "`query: `" in rows["base model (student)"]
    assert str(tiny_teacher_st) in rows["teacher (frozen, English)"]
    assert rows["languages"] == "en, vi"
    summary = json.loads((run / "metrics.json").read_text())
    assert rows["bitext"] == (f"`{tiny_models.BITEXT_VI}` ({summary['train_pairs']} training pairs, "
                              f"{summary['heldout_pairs']} held out)")
    assert rows["losses"].startswith("token_ot ×1, mse ×100")
    assert "not known to optical" in rows["licence"] and "optical card RUN_DIR --license" in rows["licence"]
    # the recipe in full, as the run stored it
    recipe_block = re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL).group(1)
    assert yaml.safe_load(recipe_block) == yaml.safe_load((run / "recipe.yaml").read_text())
    # the final held-out check, as metrics.json has it
    heldout = summary["heldout"]
    assert "| " + " | ".join(heldout) + " |" in section
    assert "| " + " | ".join(f"{v:.4f}" for v in heldout.values()) + " |" in section
    assert "No retrieval evaluation in the run yet" in section
    assert "OPTICAL" in text and "huang2023optical" in text  # token_ot: the method is cited


def test_known_models_give_licence_base_model_and_dataset(tiny_teacher_st, tmp_path):
    model = SentenceTransformer(str(tiny_teacher_st))
    recipe = recipe_from_dict({"lang": "sw", "student": {"model": "packaged:multilingual-e5-small"},
                               "teacher": {"model": "packaged:all-minilm-l6-v2"},
                               "bitext": {"hf_name": "Helsinki-NLP/opus-100", "hf_config": "en-sw"},
                               "loss": [{"name": "mse", "weight": 1.0}]})
    card = ModelCard(generate_card(model, recipe, tmp_path))
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["base_model"] == "intfloat/multilingual-e5-small"
    assert data["datasets"] == ["Helsinki-NLP/opus-100"] and data["language"] == ["en", "sw"]
    assert "`mit` (the base model's licence)" in card.text
    assert 'SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")' in card.text  # the teacher, by hub id
    assert "[Helsinki-NLP/opus-100](https://huggingface.co/datasets/Helsinki-NLP/opus-100), config `en-sw`" \
        in card.text
    assert "huang2023optical" not in card.text  # no token_ot term: OPTICAL is not claimed


def test_saved_student_encodes_exactly_what_eval_scores(run):
    """A plain SentenceTransformer on RUN/student, in every role, gives the embeddings that
    optical's evaluation encoder (and the Student class) computes; the training prefix applies."""
    folder = run / "student"
    model = SentenceTransformer(str(folder), trust_remote_code=True)  # student.layers: all
    plain = model.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_array_equal(model.encode_query(TEXTS, normalize_embeddings=True), plain)
    np.testing.assert_array_equal(model.encode_document(TEXTS, normalize_embeddings=True), plain)
    np.testing.assert_allclose(model.encode(["query: " + t for t in TEXTS], prompt="", normalize_embeddings=True),
                               plain, atol=1e-6)
    for role in ("query", "document"):
        evaluated = SentenceTransformerEncoder(str(folder), role=role).encode(TEXTS)
        np.testing.assert_array_equal(evaluated, plain)
    np.testing.assert_allclose(Student.load(run).encode(TEXTS), plain, atol=1e-6)
    assert not np.allclose(model.encode(TEXTS, prompt="", normalize_embeddings=True), plain)  # the prefix matters


def test_eval_into_the_run_refreshes_its_card_and_keeps_the_embedding_cache(run_copy):
    identity = folder_identity(run_copy / "student")
    result = runner.invoke(app, ["eval", str(run_copy), "--task", "bitext", "--path", str(tiny_models.BITEXT_VI),
                                 "--metrics", "R@1,RR"])
    assert result.exit_code == 0, result.output
    assert f"model card updated: {run_copy / 'student' / 'README.md'}" in result.output
    report = json.loads((run_copy / "eval-bitext" / "metrics.json").read_text())
    section = card_of(run_copy).text.split(START)[1].split(END)[0]
    assert "No retrieval evaluation" not in section and "`eval-bitext`: bitext" in section
    for name, entry in report["tasks"].items():
        assert (f"| {name} | {entry['query_encoder']} → {entry['doc_encoder']} | {entry['n_queries']} | "
                f"{entry['corpus_size']} | {entry['metrics']['R@1']:.4f} | {entry['metrics']['RR']:.4f} |") in section
    assert folder_identity(run_copy / "student") == identity  # README.md is not part of the model's identity


def test_eval_elsewhere_leaves_the_card_alone(run_copy, tmp_path):
    before = (run_copy / "student" / "README.md").read_text()
    result = runner.invoke(app, ["eval", "--student", str(run_copy), "--task", "bitext",
                                 "--path", str(tiny_models.BITEXT_VI), "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "model card updated" not in result.output
    assert (run_copy / "student" / "README.md").read_text() == before


def test_card_command_sets_a_licence_and_regenerates_a_missing_card(run_copy):
    result = runner.invoke(app, ["card", str(run_copy), "--license", "apache-2.0"])
    assert result.exit_code == 0, result.output
    card = card_of(run_copy)
    assert card.data.to_dict()["license"] == "apache-2.0" and "`apache-2.0` (set for this card)" in card.text
    assert runner.invoke(app, ["card", str(run_copy)]).exit_code == 0  # kept without --license
    assert card_of(run_copy).data.to_dict()["license"] == "apache-2.0"
    (run_copy / "student" / "README.md").unlink()  # e.g. a student saved before cards existed
    assert runner.invoke(app, ["card", str(run_copy)]).exit_code == 0
    text = (run_copy / "student" / "README.md").read_text()
    assert START in text and "## Model Details" in text and "Full Model Architecture" in text
    one_error_line(runner.invoke(app, ["card", str(run_copy / "nope")]), "run directory not found")
    one_error_line(runner.invoke(app, ["card", str(run_copy), "--license", " "]), "--license")


def test_refresh_of_an_unfinished_run_is_one_line(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "recipe.yaml").write_text(recipe_from_dict({}).to_yaml())
    with pytest.raises(Exception, match="the run has no student/ yet"):
        refresh_card(tmp_path / "r")


# ----------------------------------------------------------------------------- optical push


class Recorder:
    """Stands in for the hub: records what HfApi would send."""

    def __init__(self, monkeypatch, fail=None):
        from huggingface_hub import HfApi

        self.calls = []
        recorder = self

        def create_repo(api, repo_id, **kwargs):
            recorder.calls.append(("create_repo", api.token, repo_id, kwargs))
            if fail is not None:
                raise fail
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def create_branch(api, repo_id, **kwargs):
            recorder.calls.append(("create_branch", api.token, repo_id, kwargs))

        def create_commit(api, repo_id, operations, **kwargs):
            files = {}
            for op in operations:
                content = op.path_or_fileobj
                files[op.path_in_repo] = content if isinstance(content, bytes) else Path(content).read_bytes()
            recorder.calls.append(("create_commit", api.token, repo_id, {**kwargs, "files": files}))
            return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

        for name, fn in (("create_repo", create_repo), ("create_branch", create_branch),
                         ("create_commit", create_commit)):
            monkeypatch.setattr(HfApi, name, fn)


def test_push_uploads_the_student_folder_with_its_card(run_copy, monkeypatch):
    hub = Recorder(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    result = runner.invoke(app, ["push", str(run_copy), "someone/vi-student", "--private", "--revision", "v1",
                                 "--message", "first"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "https://huggingface.co/someone/vi-student/commit/abc"
    (repo, token, repo_id, options), (branch, *_), (commit, commit_token, commit_repo, sent) = hub.calls
    assert (repo, token, repo_id) == ("create_repo", "hf_from_env", "someone/vi-student")
    assert options["private"] is True and options["exist_ok"] is True
    assert branch == "create_branch" and hub.calls[1][3]["branch"] == "v1"
    assert (commit, commit_token, commit_repo) == ("create_commit", "hf_from_env", "someone/vi-student")
    assert sent["revision"] == "v1" and sent["commit_message"] == "first"
    folder = run_copy / "student"
    on_disk = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert set(sent["files"]) == set(on_disk) and {"modules.json", "README.md", "layer_concat.py"} <= set(on_disk)
    assert any(name.endswith("_Dense/config.json") for name in on_disk)
    assert all(sent["files"][name] == on_disk[name] for name in on_disk if name != "README.md")
    card = sent["files"]["README.md"].decode("utf-8")
    assert 'SentenceTransformer("someone/vi-student", trust_remote_code=True)' in card
    assert MODEL_ID_PLACEHOLDER not in card
    assert MODEL_ID_PLACEHOLDER in on_disk["README.md"].decode("utf-8")  # the local card stays general
    result = runner.invoke(app, ["push", str(run_copy), "someone/vi-student", "--token", "hf_flag"])
    assert result.exit_code == 0 and hub.calls[-1][1] == "hf_flag"  # --token wins over HF_TOKEN


def test_push_checks_the_run_and_the_name_before_the_network(run_copy, tmp_path, monkeypatch):
    hub = Recorder(monkeypatch)
    one_error_line(runner.invoke(app, ["push", str(tmp_path / "missing"), "a/b"]), "run directory not found")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run_copy / "recipe.yaml", unfinished / "recipe.yaml")
    one_error_line(runner.invoke(app, ["push", str(unfinished), "a/b"]), "has no student/ yet")
    one_error_line(runner.invoke(app, ["push", str(run_copy), "not a/valid//id"]), "not a hub repository id")
    one_error_line(runner.invoke(app, ["push", str(run_copy), "a/b", "--revision", " "]), "--revision")
    assert hub.calls == []


def test_push_offline_is_one_line(run_copy, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    one_error_line(runner.invoke(app, ["push", str(run_copy), "someone/vi-student", "--token", "hf_x"]),
                   "push to someone/vi-student: HF_HUB_OFFLINE is set")


@pytest.mark.parametrize("error, expected", [
    (type("ConnectError", (Exception,), {})("[Errno -2] Name or service not known"),
     "cannot reach the Hugging Face hub"),
    (type("HfHubHTTPError", (OSError,), {"response": type("R", (), {"status_code": 401})()})("401 Unauthorized\nmore"),
     "not allowed (401): give --token or set HF_TOKEN"),
])
def test_push_network_failures_are_one_line(run_copy, monkeypatch, error, expected):
    Recorder(monkeypatch, fail=error)
    one_error_line(runner.invoke(app, ["push", str(run_copy), "someone/vi-student"]), expected)
