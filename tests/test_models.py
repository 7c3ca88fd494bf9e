"""Teachers are frozen and shaped right; the student saves as a sentence-transformers folder."""

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from optical.errors import OpticalError
from optical.models.sources import resolve_model
from optical.models.student import Student
from optical.models.teacher import load_teacher

SENTENCES = ["Con mèo ngủ trên giường ấm.", "The dog runs in the green park.", "Mở tệp"]


@pytest.fixture()
def teachers(tiny_teacher_st, tiny_clip, tiny_cross_encoder, tiny_hf_teacher):
    return {"sentence-transformers": tiny_teacher_st, "clip": tiny_clip,
            "cross-encoder": tiny_cross_encoder, "hf": tiny_hf_teacher}


@pytest.mark.parametrize("kind", ["sentence-transformers", "clip", "cross-encoder", "hf"])
def test_teacher_outputs_and_frozen(teachers, kind):
    teacher = load_teacher(kind, str(teachers[kind]), max_length=32)
    out = teacher(teacher.tokenize(SENTENCES))
    dim = 16 if kind == "clip" else 32
    assert out.token_states.shape[0] == 3 and out.token_states.shape[-1] == dim
    assert out.sentence.shape == (3, dim) and teacher.dim == dim
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.model.training  # a teacher never leaves eval mode
    emb = teacher.encode(SENTENCES, batch_size=2)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_sentence_transformers_teacher_matches_its_own_encode(tiny_teacher_st):
    teacher = load_teacher("sentence-transformers", str(tiny_teacher_st))
    expected = SentenceTransformer(str(tiny_teacher_st)).encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(teacher.encode(SENTENCES), expected, atol=1e-5)


def test_clip_teacher_sentence_is_clip_text_features(tiny_clip):
    from transformers import CLIPModel

    teacher = load_teacher("clip", str(tiny_clip))
    features = teacher.tokenize(SENTENCES)
    expected = CLIPModel.from_pretrained(tiny_clip).get_text_features(**{k: v for k, v in features.items()
                                                                         if k != "token_type_ids"})
    expected = getattr(expected, "pooler_output", expected)
    torch.testing.assert_close(teacher(features).sentence, expected, atol=1e-5, rtol=1e-5)


def test_student_saved_folder_loads_with_sentence_transformers(tmp_path, tiny_student):
    student = Student.create(str(tiny_student), output_dim=32, max_length=32, prefix="query: ")
    with torch.no_grad():
        student.head.weight.normal_()
    mine = student.encode(SENTENCES)
    student.save(tmp_path / "s")
    assert (tmp_path / "s" / "2_Dense").is_dir()
    assert not list((tmp_path / "s").rglob("*.bin")), "weights must be safetensors"
    theirs = SentenceTransformer(str(tmp_path / "s")).encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(mine, theirs, atol=1e-5)
    again = Student.load(tmp_path / "s")
    assert again.prefix == "query: " and again.output_dim == 32
    np.testing.assert_allclose(again.encode(SENTENCES), mine, atol=1e-5)


def test_a_student_saved_after_loading_writes_the_same_files(tmp_path, tiny_student):
    """A resumed run saves a student loaded from a checkpoint; its folder must be the same
    bytes as the folder of the student that wrote the checkpoint (tokenizer state, card)."""
    student = Student.create(str(tiny_student), output_dim=32, max_length=32)
    student.encode(SENTENCES)  # leaves truncation/padding set on the fast tokenizer
    student.save(tmp_path / "first")
    again = Student.load(tmp_path / "first")
    again.encode(SENTENCES[:1])
    again.save(tmp_path / "second")
    for name in ("tokenizer.json", "tokenizer_config.json", "README.md", "config_sentence_transformers.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name


def test_student_sentence_is_mean_of_projected_tokens(tiny_student):
    student = Student.create(str(tiny_student), output_dim=32)
    features = student.tokenize(SENTENCES)
    tokens, sentence = student(features)
    mask = features["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(sentence, (tokens * mask).sum(1) / mask.sum(1), atol=1e-5, rtol=1e-5)


def test_bad_model_specs_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(OpticalError, match="model path does not exist"):
        resolve_model(str(tmp_path / "missing" / "model"))
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OpticalError, match="model path does not exist: runs/vi"):  # a typo, not a hub id
        resolve_model("runs/vi")
    assert resolve_model("someone/model") == "someone/model"  # no such local folder: a hub id
    with pytest.raises(OpticalError, match="unknown teacher kind 'bert'"):
        load_teacher("bert", "x")
    with pytest.raises(OpticalError, match="not a student folder"):
        Student.load(tmp_path)


@pytest.mark.parametrize("kind", ["sentence-transformers", "clip", "hf"])
def test_teacher_layer_out_of_range_is_one_line(teachers, kind):
    with pytest.raises(OpticalError, match=r"teacher.layer: 99 is out of range .* has \d+ layers"):
        load_teacher(kind, str(teachers[kind]), layer=99)
    load_teacher(kind, str(teachers[kind]), layer=0)  # the embeddings: in range


@pytest.mark.parametrize("prefix", ["", "query: "])
def test_saved_student_encodes_the_same_in_every_role(tmp_path, tiny_student, prefix):
    """`encode`, `encode_query` and `encode_document` (what `optical eval` calls) all apply the
    training prefix: the saved model scores exactly what training saw."""
    student = Student.create(str(tiny_student), output_dim=32, max_length=32, prefix=prefix)
    with torch.no_grad():
        student.head.weight.normal_()
    student.save(tmp_path / "s")
    model = SentenceTransformer(str(tmp_path / "s"))
    plain = model.encode(SENTENCES)
    np.testing.assert_allclose(model.encode_document(SENTENCES), plain, atol=1e-6)
    np.testing.assert_allclose(model.encode_query(SENTENCES), plain, atol=1e-6)
    by_hand = model.encode([prefix + s for s in SENTENCES], prompt="")
    np.testing.assert_allclose(plain, by_hand, atol=1e-6)
    from optical.eval.encoders import SentenceTransformerEncoder

    evaluated = SentenceTransformerEncoder(str(tmp_path / "s"), role="document").encode(SENTENCES)
    np.testing.assert_allclose(evaluated, student.encode(SENTENCES), atol=1e-5)


def test_normalized_student_keeps_sentence_the_mean_of_its_tokens(tmp_path, tiny_student):
    student = Student.create(str(tiny_student), output_dim=32, normalize=True)
    with torch.no_grad():
        student.head.weight.normal_()
        student.head.bias.normal_()
    features = student.tokenize(SENTENCES)
    tokens, sentence = student(features)
    mask = features["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(sentence, (tokens * mask).sum(1) / mask.sum(1), atol=1e-5, rtol=1e-5)
    hidden = student.hidden_states(features)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    expected = student.head(torch.nn.functional.normalize(pooled, dim=-1))
    torch.testing.assert_close(sentence, expected, atol=1e-5, rtol=1e-5)
    student.save(tmp_path / "s")
    again = Student.load(tmp_path / "s")
    assert again.normalizes and not Student.create(str(tiny_student), output_dim=32).normalizes
    np.testing.assert_allclose(SentenceTransformer(str(tmp_path / "s")).encode(SENTENCES, normalize_embeddings=True),
                               student.encode(SENTENCES), atol=1e-5)


def test_layer_concat_student_reads_every_layer_and_round_trips(tmp_path, tiny_student):
    from transformers import AutoModel

    from optical.models.student import load_sentence_transformer

    student = Student.create(str(tiny_student), output_dim=32, max_length=32, layers="all")
    depth = AutoModel.from_pretrained(tiny_student).config.num_hidden_layers
    assert student.layers == list(range(depth + 1)) and student.hidden_dim == 24 * (depth + 1)
    with torch.no_grad():
        student.head.weight.normal_()
    features = student.tokenize(SENTENCES)
    states = student.transformer.auto_model(**features, output_hidden_states=True).hidden_states
    hidden = student.hidden_states(features)
    torch.testing.assert_close(hidden[..., :24], states[0])  # block 0: the embedding output
    torch.testing.assert_close(hidden[..., -24:], states[-1])  # last block: the last layer
    tokens, sentence = student(features)
    mask = features["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(sentence, (tokens * mask).sum(1) / mask.sum(1), atol=1e-5, rtol=1e-5)
    student.save(tmp_path / "s")
    again = Student.load(tmp_path / "s")
    assert again.layers == student.layers
    np.testing.assert_allclose(again.encode(SENTENCES), student.encode(SENTENCES), atol=1e-6)
    plain = load_sentence_transformer(tmp_path / "s").encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(plain, student.encode(SENTENCES), atol=1e-5)
    from optical.eval.encoders import SentenceTransformerEncoder

    evaluated = SentenceTransformerEncoder(str(tmp_path / "s"), role="document").encode(SENTENCES)
    np.testing.assert_allclose(evaluated, student.encode(SENTENCES), atol=1e-5)


def test_last_layer_student_is_unchanged_by_the_layers_option(tiny_student):
    torch.manual_seed(0)
    default = Student.create(str(tiny_student), output_dim=32)
    chosen = Student.create(str(tiny_student), output_dim=32, layers=(-1,))
    assert default.layers is None and chosen.layers == [default.transformer.auto_model.config.num_hidden_layers]
    # the identity start sits on the last layer's block: both give the same embeddings
    np.testing.assert_allclose(chosen.encode(SENTENCES), default.encode(SENTENCES), atol=1e-6)


def test_use_layers_switches_a_student_between_last_and_several_layers(tmp_path, tiny_student):
    """A last-layer student switched to (0, -1) reads those layers side by side with a zero head
    of the new width; saved and loaded it stays so; switched back it is a plain folder again."""
    student = Student.create(str(tiny_student), output_dim=32, max_length=32)
    depth = student.transformer.auto_model.config.num_hidden_layers
    assert student.use_layers((0, -1)) and not student.use_layers((0, depth))  # the second changes nothing
    assert student.layers == [0, depth] and student.hidden_dim == 48 and student.output_dim == 32
    assert torch.count_nonzero(student.head.weight) == 0
    with torch.no_grad():
        student.head.weight.normal_()
    features = student.tokenize(SENTENCES)
    states = student.transformer.auto_model(**features, output_hidden_states=True).hidden_states
    torch.testing.assert_close(student.hidden_states(features), torch.cat([states[0], states[-1]], dim=-1))
    # sentence-transformers' own forward (what encode and optical eval use) sees the same features
    mask = features["attention_mask"].unsqueeze(-1).float()
    pooled = (torch.cat([states[0], states[-1]], dim=-1) * mask).sum(1) / mask.sum(1)
    expected = torch.nn.functional.normalize(student.head(pooled), dim=-1).detach().numpy()
    np.testing.assert_allclose(student.encode(SENTENCES), expected, atol=1e-5)
    student.save(tmp_path / "two")
    assert Student.load(tmp_path / "two").layers == [0, depth]
    assert student.use_layers("last") and student.layers is None and student.hidden_dim == 24
    student.save(tmp_path / "last")
    assert not (tmp_path / "last" / "layer_concat.py").exists()
    assert "LayerConcat" not in (tmp_path / "last" / "modules.json").read_text()
    with pytest.raises(OpticalError, match="warm_start.refit_layers: layer 99") as err:
        student.use_layers((99,), "warm_start.refit_layers")
    assert "\n" not in str(err.value)


def test_dropout_zero_makes_training_mode_deterministic(tiny_student):
    from optical.recipe import recipe_from_dict

    student = Student.create(str(tiny_student), output_dim=32, max_length=32)
    features = student.tokenize(SENTENCES)
    student.train()
    torch.manual_seed(0)
    noisy = student(features)[1]
    assert not torch.allclose(noisy, student(features)[1])  # the model's own dropout is on
    assert student.set_dropout(0.0) > 0
    student.eval()
    clean = student(features)[1]
    student.train()
    torch.testing.assert_close(student(features)[1], clean)
    with pytest.raises(OpticalError, match=r"student.dropout: must be in \[0, 1\) or null, got 1.5"):
        recipe_from_dict({"student": {"dropout": 1.5}})


@pytest.mark.parametrize("layers", [(99,), (), "first"])
def test_bad_layer_numbers_are_one_line_errors(tiny_student, layers):
    with pytest.raises(OpticalError, match="student.layers") as err:
        Student.create(str(tiny_student), output_dim=32, layers=layers)
    assert "\n" not in str(err.value)


def test_a_multi_layer_folder_carries_its_module_and_loads_without_optical(tmp_path, tiny_student):
    """The saved folder names `layer_concat.LayerConcat` and holds that file: plain
    sentence-transformers loads it with trust_remote_code, in a process with no optical."""
    import json
    import os
    import subprocess
    import sys

    student = Student.create(str(tiny_student), output_dim=32, layers=(0, -1))
    student.save(tmp_path / "s")
    types = [e["type"] for e in json.loads((tmp_path / "s" / "modules.json").read_text())]
    assert "layer_concat.LayerConcat" in types and (tmp_path / "s" / "layer_concat.py").is_file()
    code = ("import sys, json; sys.modules['optical'] = None\n"  # any `import optical` now fails
            "from sentence_transformers import SentenceTransformer\n"
            f"m = SentenceTransformer({str(tmp_path / 's')!r}, trust_remote_code=True)\n"
            "print(json.dumps(m.encode(sys.argv[1:], normalize_embeddings=True).tolist()))")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code, *SENTENCES], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_allclose(np.array(json.loads(out.stdout.strip().splitlines()[-1])),
                               student.encode(SENTENCES), atol=1e-5)


def test_a_changed_module_copy_is_not_trusted(tmp_path, tiny_student):
    from optical.models.student import load_sentence_transformer

    Student.create(str(tiny_student), output_dim=32, layers="all").save(tmp_path / "s")
    copy = tmp_path / "s" / "layer_concat.py"
    copy.write_text(copy.read_text() + "\nimport os  # anything else\n")
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_sentence_transformer(tmp_path / "s")


def test_a_folder_naming_foreign_code_is_not_trusted(tmp_path, tiny_student):
    import json

    from optical.models.student import load_sentence_transformer

    Student.create(str(tiny_student), output_dim=32, layers="all").save(tmp_path / "s")
    manifest = tmp_path / "s" / "modules.json"
    entries = json.loads(manifest.read_text())
    entries[1]["type"] = "somebody.else.Module"
    manifest.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_sentence_transformer(tmp_path / "s")
