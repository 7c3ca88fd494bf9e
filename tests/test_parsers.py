"""Every user-caused input problem is one OpticalError line (CLI: `error: ...`, exit 2):
targeted cases, then property-based tests over each parser (any input works or says why)."""

import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from optical.cli import app
from optical.eval.compare import compare_runs, load_per_query
from optical.data.bitext import read_bitext
from optical.data.tasks import load_beir, load_bitext
from optical.errors import OpticalError, writing
from optical.eval.index import parse_index_spec
from optical.recipe import Recipe, load_recipe, recipe_from_dict

runner = CliRunner()
# max_examples comes from the loaded hypothesis profile (tests/conftest.py): "ci" by default,
# "fuzz" by hand (HYPOTHESIS_PROFILE=fuzz).
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEEP = "[" * 100_000 + "]" * 100_000


def one_line(err: OpticalError) -> str:
    message = str(err)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def cli_error(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def beir(folder: Path, corpus: bytes, queries: bytes, qrels: bytes) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_bytes(corpus)
    (folder / "queries.jsonl").write_bytes(queries)
    (folder / "qrels" / "test.tsv").write_bytes(qrels)
    return folder


GOOD_CORPUS = b'{"_id": "d1", "text": "Con meo"}\n{"_id": "d2", "text": "Con cho"}\n'
GOOD_QUERIES = b'{"_id": "q1", "text": "cat"}\n'
GOOD_QRELS = b"query-id\tcorpus-id\tscore\nq1\td1\t1\n"


# ------------------------------------------------------------------------------ BEIR


@pytest.mark.parametrize("corpus, queries, qrels, pattern", [
    (GOOD_CORPUS + b'{"_id": "d3", "text": "caf\xe9"}\n', GOOD_QUERIES, GOOD_QRELS, "corpus.jsonl:3: not valid UTF-8"),
    (GOOD_CORPUS, b'{"_id": "q1", "text": "\xff\xfe"}\n', GOOD_QRELS, "queries.jsonl:1: not valid UTF-8"),
    (GOOD_CORPUS, GOOD_QUERIES, b"q1\td1\t-inf\n", "test.tsv:1: score '-inf' is not a relevance grade"),
    (GOOD_CORPUS, GOOD_QUERIES, b"q1\td1\tnan\n", "test.tsv:1: score 'nan' is not a relevance grade"),
    (GOOD_CORPUS, GOOD_QUERIES, b"q1\td1\t1e400\n", "test.tsv:1: score '1e400' is not a relevance grade"),
    (GOOD_CORPUS, GOOD_QUERIES, b"q1\td1\t99999999999999\n", "is not a relevance grade"),
    (GOOD_CORPUS, GOOD_QUERIES, b"q1\td1\t\xe91\n", "test.tsv:1: not valid UTF-8"),
    (GOOD_CORPUS + DEEP.encode() + b"\n", GOOD_QUERIES, GOOD_QRELS, "corpus.jsonl:3: invalid JSON (nested too deeply)"),
    (GOOD_CORPUS + b'{"_id": "d3", "text": "\\ud800"}\n', GOOD_QUERIES, GOOD_QRELS, "corpus.jsonl:3: a \\u escape is a lone"),
])
def test_beir_bad_bytes_and_scores_are_one_line(tmp_path, corpus, queries, qrels, pattern):
    with pytest.raises(OpticalError) as err:
        load_beir(beir(tmp_path / "b", corpus, queries, qrels))
    assert pattern in one_line(err.value)


def test_eval_bitext_in_latin1_is_one_line(tmp_path, tiny_teacher_st):
    path = tmp_path / "pairs.tsv"
    path.write_bytes("the coffee\tle caf\u00e9\n".encode("latin-1"))
    with pytest.raises(OpticalError, match=r"pairs.tsv:1: not valid UTF-8"):
        load_bitext(path, "fr")
    assert "pairs.tsv:1: not valid UTF-8" in cli_error("eval", "--task", "bitext", "--path", path, "--lang", "fr",
                                                       "--student", tiny_teacher_st)


line_bytes = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda i, t, x: json.dumps({"_id": i, "title": t, "text": x}).encode(),
              st.one_of(st.text(max_size=4), st.integers(), st.none(), st.floats()),
              st.one_of(st.text(max_size=8), st.none(), st.integers()),
              st.one_of(st.text(max_size=8), st.none(), st.lists(st.integers(), max_size=2))),
)
qrels_line = st.one_of(
    st.binary(max_size=30),
    st.builds(lambda q, d, s: f"{q}\t{d}\t{s}".encode("utf-8", "surrogatepass"),
              st.sampled_from(["q1", "q2", "x"]), st.sampled_from(["d1", "d2", "y"]),
              st.one_of(st.integers(), st.floats().map(repr), st.text(max_size=5), st.just("1e999"))),
)


@PROPERTY
@given(corpus=st.lists(line_bytes, max_size=6), queries=st.lists(line_bytes, max_size=4),
       qrels=st.lists(qrels_line, max_size=5))
@example(corpus=[b'{"_id": "d1", "text": "a"}'], queries=[b'{"_id": "q1", "text": "b"}'], qrels=[b"q1\td1\t-inf"])
def test_beir_loader_works_or_says_why(corpus, queries, qrels):
    with tempfile.TemporaryDirectory() as tmp:
        folder = beir(Path(tmp), b"\n".join(corpus), b"\n".join(queries), b"\n".join(qrels))
        try:
            task = load_beir(folder)
        except OpticalError as err:
            one_line(err)
            return
    for texts in (task.queries, task.corpus):
        for key, text in texts.items():
            (key + text).encode("utf-8")  # no lone surrogates reach the encoders
    assert all(isinstance(g, int) and abs(g) < 2**31 for docs in task.qrels.values() for g in docs.values())


# ------------------------------------------------------------------------------ bitext


def test_lone_surrogate_in_jsonl_bitext(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"en": "a cat", "vi": "con m\\ud800o"}\n{"en": "a dog", "vi": "con cho"}\n', "utf-8")
    with pytest.raises(OpticalError, match=r"pairs.jsonl:1: a \\u escape is a lone surrogate"):
        read_bitext(path, on_bad_line="error")
    bitext = read_bitext(path, max_bad_fraction=1.0)
    assert bitext.pairs == [("a dog", "con cho")] and bitext.bad[0][0] == 1


def test_deep_json_in_bitext(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(DEEP + "\n", "utf-8")
    with pytest.raises(OpticalError, match="nested too deeply"):
        read_bitext(path, on_bad_line="error")


bitext_line = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda a, b: f"{a}\t{b}".encode("utf-8", "surrogatepass"), st.text(max_size=10), st.text(max_size=10)),
    st.builds(lambda a, b: json.dumps({"en": a, "vi": b}).encode(),
              st.one_of(st.text(max_size=10), st.integers(), st.none()), st.one_of(st.text(max_size=10), st.none())),
    st.just(b"[" * 5000),
)


@PROPERTY
@given(lines=st.lists(bitext_line, max_size=8), suffix=st.sampled_from([".tsv", ".jsonl"]),
       mode=st.sampled_from(["skip", "error"]))
def test_read_bitext_works_or_says_why(lines, suffix, mode):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"pairs{suffix}"
        path.write_bytes(b"\n".join(lines))
        try:
            bitext = read_bitext(path, on_bad_line=mode)
        except OpticalError as err:
            one_line(err)
            return
    assert bitext.pairs
    for en, other in bitext.pairs:
        assert en and other and (en + other).encode("utf-8")


@PROPERTY
@given(data=st.one_of(st.binary(max_size=3000),
                      st.builds(lambda bom, body: bom + body,
                                st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]),
                                st.lists(bitext_line, max_size=12).map(b"\n".join))),
       suffix=st.sampled_from([".tsv", ".jsonl", ".txt"]), mode=st.sampled_from(["skip", "error"]),
       fraction=st.sampled_from([0.0, 0.05, 0.5, 1.0]))
@example(data=b'{"en":"\\u0000","vi":"!"}', suffix=".jsonl", mode="skip", fraction=0.0)  # a fuzz find
def test_any_bytes_read_or_raise_optical_error(data, suffix, mode, fraction):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"pairs{suffix}"
        path.write_bytes(data)
        try:
            bitext = read_bitext(path, on_bad_line=mode, max_bad_fraction=fraction)
        except OpticalError as err:
            one_line(err)
            return
    assert bitext.pairs and len(bitext.bad) <= fraction * (len(bitext.bad) + len(bitext.pairs))
    assert all("\0" not in en + other for en, other in bitext.pairs)


# ------------------------------------------------------------------------------ recipes


@pytest.mark.parametrize("content, pattern", [
    ("loss:\n  - name: {a: 1}\n", "loss.0.name: unknown loss"),
    ("loss:\n  - name: [mse]\n", "loss.0.name: unknown loss"),
    ("loss:\n  - name: mse\n    weight: .nan\n", "loss.0.weight: expected a finite number"),
    ("train:\n  lr: .inf\n", "train.lr: expected a finite number"),
    ("train: " + "[" * 20000 + "\n", "invalid YAML"),
    ("seed: 2024-13-01\n", "invalid YAML"),
    ("? [a, b]\n: 1\n", "invalid YAML"),
])
def test_bad_recipe_text_is_one_line(tmp_path, content, pattern):
    path = tmp_path / "r.yaml"
    path.write_text(content, "utf-8")
    with pytest.raises(OpticalError) as err:
        load_recipe(path)
    assert pattern in one_line(err.value)


def test_non_utf8_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes("lang: vi\nname: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(OpticalError, match=r"r.yaml:2: not valid UTF-8"):
        load_recipe(path)
    assert "r.yaml:2: not valid UTF-8" in cli_error("distill", "--recipe", path, "--quiet")


def test_deep_override_value_stays_a_string():
    assert recipe_from_dict({}, ["name=" + "[" * 20000]).name == "[" * 20000  # not a RecursionError


KEYS = ["name", "lang", "teacher", "student", "bitext", "loss", "ot", "warm_start", "train", "eval", "output_dir",
        "kind", "model", "max_length", "path", "lr", "steps", "epsilon", "rho", "weight", "params", "english",
        "batch_size", "masses", "metrics", "seed", "heldout", "max_pairs", "layers"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                    st.sampled_from(["mse", "token_ot", "infonce", "sigrot", "idf", "2e-5", "1e999", "nan"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=4), st.integers()), inner, max_size=4)),
    max_leaves=12)
recipe_dicts = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)
overrides = st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
    ["train.lr", "loss", "ot.rho", "train.steps", "teacher.kind", "bitext.heldout", "x.y", "loss.0",
     "student.layers", "warm_start.refit_layers", "student.dropout", "ot.solver", "student.new_tokens"]),
    st.text(max_size=10)), max_size=3)


@PROPERTY
@given(data=recipe_dicts, extra=overrides)
@example(data={"loss": [{"name": {"a": 1}}]}, extra=[])
@example(data={"loss": [{"name": "mse", "weight": float("nan")}]}, extra=[])
def test_recipe_from_dict_works_or_says_why(data, extra):
    try:
        recipe = recipe_from_dict(data, extra)
    except OpticalError as err:
        one_line(err)
        return
    assert isinstance(recipe, Recipe)
    assert all(term.weight == term.weight and abs(term.weight) != float("inf") for term in recipe.loss)


@PROPERTY
@given(value=st.one_of(st.lists(st.integers(-20, 20), max_size=5).map(lambda v: ",".join(map(str, v))),
                       st.lists(st.integers(-20, 20), max_size=5).map(str),
                       st.sampled_from(["all", "last", "ALL", "1.5", "-1", "0,,12", "[a]"]), st.text(max_size=8)))
def test_student_layers_parse_or_say_why(value):
    """`--set student.layers=...` gives last / all / a tuple of ints, or one line naming the key."""
    try:
        layers = load_recipe("recipes/vi/quickstart.yaml", [f"student.layers={value}"]).student.layers
    except OpticalError as err:
        assert "student.layers" in one_line(err)
        return
    assert layers in ("last", "all") or (isinstance(layers, tuple) and layers
                                         and all(isinstance(i, int) for i in layers))


@PROPERTY
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200),
                      values.map(lambda v: json.dumps(v, default=str)), recipe_dicts.map(lambda d: json.dumps(d))))
def test_load_recipe_works_or_says_why(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            assert isinstance(load_recipe(path), Recipe)
        except OpticalError as err:
            one_line(err)


# ------------------------------------------------------------------------------ compare, index, --out


def write_per_query(folder: Path, content) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "per_query.json").write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return folder


@pytest.mark.parametrize("content, pattern", [
    ({"clir": 3}, "clir: expected {metric"),
    ({"clir": {"nDCG@10": [0.5]}}, "clir.nDCG@10: expected {query id: number}"),
    ({"clir": {"nDCG@10": {"q1": "high"}}}, "clir.nDCG@10.q1: expected a finite number"),
    (7, "expected {task: {metric"),
    (b'{"clir": {"nDCG@10": {"q1": 0.5, "q\xff": 1}}}', "per_query.json:1: not valid UTF-8"),
    (b'{"clir": {"nDCG@10": {"q1": NaN}}}', "expected a finite number"),
    ({"clir": {"nDCG@10": {"q1": 8.988465674311579e+307}}}, "clir.nDCG@10.q1: expected a metric value within"),
    ({"clir": {"nDCG@10": {"q1": -10**16}}}, "expected a metric value within ±1e+15"),
])
def test_compare_refuses_malformed_per_query(tmp_path, content, pattern):
    good = write_per_query(tmp_path / "a", {"clir": {"nDCG@10": {"q1": 0.5, "q2": 1.0}}})
    bad = write_per_query(tmp_path / "b", content)
    assert pattern in cli_error("eval", "--compare", good, bad)


per_query_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=15)
per_query_shaped = st.dictionaries(st.sampled_from(["clir", "t"]), st.dictionaries(
    st.sampled_from(["nDCG@10", "RR"]), st.dictionaries(st.sampled_from(["q1", "q2", "q3"]),
                                                        st.one_of(st.floats(), st.integers(), st.text(max_size=2)),
                                                        max_size=3), max_size=2), max_size=2)


@PROPERTY
@given(content=st.one_of(per_query_values, per_query_shaped, st.binary(max_size=60)))
@example(content={"clir": {"nDCG@10": {"q1": 8.988465674311579e+307, "q2": 8.98846567431158e+307}}})  # fuzz find
def test_per_query_reader_works_or_says_why(content):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_per_query(Path(tmp) / "run", content)
        try:
            data = load_per_query(folder)
        except OpticalError as err:
            one_line(err)
            return
        try:
            rows = compare_runs(folder, folder, rounds=50)
        except OpticalError as err:
            one_line(err)
            return
    assert isinstance(data, dict) and all(row["diff"] == 0.0 for row in rows)


@pytest.mark.parametrize("spec", ["hnsw:efSearch=" + "9" * 40, "hnsw:M=100000", "ivf:nprobe=" + "9" * 12,
                                  "hnsw:efSearch=" + "9" * 5000])
def test_huge_index_parameters_are_refused(spec):
    with pytest.raises(OpticalError) as err:
        parse_index_spec(spec)
    assert "--index" in one_line(err.value)


@PROPERTY
@given(spec=st.one_of(st.text(max_size=30), st.builds(lambda k, key, v: f"{k}:{key}={v}",
                                                      st.sampled_from(["flat", "ivf", "hnsw"]),
                                                      st.sampled_from(["M", "ef", "efSearch", "nlist", "nprobe"]),
                                                      st.one_of(st.integers(), st.text(string.digits, max_size=30)))))
def test_index_spec_parses_or_says_why(spec):
    try:
        parsed = parse_index_spec(spec)
    except OpticalError as err:
        one_line(err)
        return
    assert all(0 < v < 2**31 for v in (parsed.nlist, parsed.nprobe, parsed.M, parsed.efSearch))


def test_eval_out_naming_a_file_is_one_line(tmp_path):
    beir(tmp_path / "b", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    (tmp_path / "taken").write_text("mine")
    assert "is a file, not a folder" in cli_error("eval", "--path", tmp_path / "b", "--out", tmp_path / "taken",
                                                  "--query-encoder", "x", "--doc-encoder", "y")
    assert (tmp_path / "taken").read_text() == "mine"


def test_distill_out_naming_a_file_is_one_line(tmp_path):
    (tmp_path / "pairs.tsv").write_text("a\tb\n", "utf-8")
    (tmp_path / "taken").write_text("mine")
    assert "is a file, not a folder" in cli_error("distill", "--bitext", tmp_path / "pairs.tsv",
                                                  "--out", tmp_path / "taken", "--quiet")


def test_failed_writes_name_the_path(tmp_path):
    from safetensors import SafetensorError

    with pytest.raises(OpticalError, match=r"cannot write .*out: No space left on device"):
        with writing(tmp_path / "out"):
            raise OSError(28, "No space left on device")
    with pytest.raises(OpticalError, match=r"cannot write .*ro/x.json: Read-only file system"):
        with writing(tmp_path / "ro"):
            raise OSError(30, "Read-only file system", str(tmp_path / "ro" / "x.json"))
    with pytest.raises(OpticalError, match=r"cannot write .*model.safetensors: Error while serializing"):
        with writing(tmp_path / "model.safetensors"):
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")


def test_full_disk_during_distill_is_one_line(tmp_path, monkeypatch, tiny_teacher_st, tiny_student, bitext_tsv):
    """The student save (safetensors) fails: one line naming the folder, no traceback."""
    from safetensors import SafetensorError
    from sentence_transformers import SentenceTransformer

    def full(self, path, *args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(SentenceTransformer, "save", full)
    result = runner.invoke(app, [str(a) for a in (
        "distill", "--teacher-model", tiny_teacher_st, "--student", tiny_student, "--bitext", bitext_tsv,
        "--out", tmp_path / "run", "--steps", 1, "--set", "train.batch_size=4", "--quiet")])
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]  # (+ model-loading bars)
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "cannot write" in errors[0] and str(tmp_path / "run") in errors[0] and "Error while serializing" in errors[0]


def test_read_only_cache_in_eval_is_one_line(tmp_path, monkeypatch, tiny_teacher_st):
    """An OSError the library does not wrap still leaves the CLI as one line naming the path."""
    import optical.eval.retrieval as evaluation

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "cache" / "embeddings"))

    monkeypatch.setattr(evaluation, "load_task", read_only)
    line = cli_error("eval", "--path", tmp_path, "--student", tiny_teacher_st)
    assert line == f"error: {tmp_path / 'cache' / 'embeddings'}: Permission denied"


def test_ot_solver_is_torch_or_triton():
    assert load_recipe("recipes/vi/quickstart.yaml").ot.solver == "torch"
    assert load_recipe("recipes/vi/quickstart.yaml", ["ot.solver=triton"]).ot.solver == "triton"
    with pytest.raises(OpticalError) as err:
        load_recipe("recipes/vi/quickstart.yaml", ["ot.solver=cuda"])
    assert "ot.solver" in one_line(err.value)
