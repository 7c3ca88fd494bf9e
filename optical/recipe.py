"""Recipes: YAML → frozen dataclasses, with dotted overrides and errors that name the key.

A recipe holds everything a distillation run needs. Files are written out in full (no
inheritance); every section below has defaults, so a recipe names only what it changes,
and `recipe_from_dict({}, flags)` builds one from CLI flags alone.

Changes on top of a file come in two kinds: ``"KEY=VALUE"`` strings (``--set``; the value
is read as YAML, except that a string field keeps the text as typed) and :class:`Flag`
values (typed CLI options such as ``--lang no``, never re-read as YAML). An error in
either names the option, not a recipe line:

    >>> recipe_from_dict({}, [Flag("lang", "no", "--lang"), "student.model=0123"]).lang
    'no'
    >>> recipe_from_dict({}, ["student.model=0123"]).student.model
    '0123'
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from optical.errors import OpticalError, where
from optical.eval.mixture import parse_mixture

TEACHER_DEFAULTS = {
    "clip": "openai/clip-vit-base-patch32",
    "sentence-transformers": "sentence-transformers/all-MiniLM-L6-v2",
    "cross-encoder": "cross-encoder/ms-marco-MiniLM-L-6-v2",
    "hf": "bert-base-uncased",
}


@dataclass(frozen=True)
class TeacherConfig:
    kind: Literal["sentence-transformers", "clip", "cross-encoder", "hf"] = "sentence-transformers"
    model: str | None = None  # None: the kind's default (TEACHER_DEFAULTS)
    max_length: int = 128
    layer: int = -1  # hidden layer whose token states are transported (-1 = last)

    @property
    def model_spec(self) -> str:
        return self.model or TEACHER_DEFAULTS[self.kind]


@dataclass(frozen=True)
class StudentConfig:
    model: str = "xlm-roberta-base"
    max_length: int = 128
    prefix: str = ""  # prepended to every student input; e5's "query: " measured worse here (docs/results.md)
    normalize: bool = False  # L2-normalise the pooled state before the head
    # Token states the head reads during training: the last layer, every layer side by side
    # (0 = embeddings), or chosen layer numbers. Training through the last layer and refitting
    # the head on every layer (warm_start.refit_layers) measured best on help-page CLIR.
    layers: Literal["last", "all"] | tuple[int, ...] = "last"
    # Keep the word-embedding matrix fixed: in multilingual encoders it holds most of the
    # parameters (96M of e5-small's 118M), so AdamW over it dominates a CPU step, and rare
    # tokens absent from the bitext would drift for nothing.
    freeze_embeddings: bool = True
    # Dropout probability of every dropout layer in the student while training; null keeps
    # the model's own (0.1 for e5 and XLM-R). The closed-form fits see dropout-free states.
    dropout: float | None = None
    # Tokens for the target-side words the tokenizer reads as <unk> (optical.models.vocabulary),
    # their input embeddings fitted in closed form from the bitext: auto = only when more than
    # 1 % of the target tokens are unknown (e5-small: Dzongkha 46 %; vi, eu, om, hi ≤ 0.1 %),
    # up to 8,000; 0 = never; N = up to N whenever any unit is unknown.
    new_tokens: Literal["auto"] | int = "auto"


@dataclass(frozen=True)
class BitextConfig:
    path: str | None = None  # TSV or JSONL file; or None with hf_name
    format: Literal["auto", "tsv", "jsonl", "hf"] = "auto"
    hf_name: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    en_column: str = "en"
    other_column: str | None = None  # None: the recipe's language code
    max_pairs: int | None = None
    heldout: int = 200  # pairs kept out of training for progress checks
    on_bad_line: Literal["skip", "error"] = "skip"
    max_bad_fraction: float = 0.05  # skip: more malformed lines than this share stops the run


@dataclass(frozen=True)
class LossTerm:
    name: str
    weight: float = 1.0
    params: dict = field(default_factory=dict)  # constructor arguments of the loss


@dataclass(frozen=True)
class OTConfig:
    epsilon: float = 0.02  # sharper than OPTICAL's 0.05 (docs/results.md, "OT settings")
    max_iter: int = 100
    tol: float = 1e-4
    rho: float | None = None  # None: balanced; a number: KL-relaxed marginals
    cost: Literal["cosine", "sqeuclidean"] = "cosine"
    masses: Literal["uniform", "idf"] = "idf"  # idf: see docs/results.md, "OT settings"
    gradient: Literal["envelope", "unrolled"] = "envelope"
    drop_special_tokens: bool = True  # [CLS]/[SEP]/<s> carry no translatable content
    # torch: the batched solver; triton: one fused program per problem on CUDA (falls back to
    # torch elsewhere). Not yet measured on a GPU, so not the default (docs/benchmarks.md).
    solver: Literal["torch", "triton"] = "torch"


@dataclass(frozen=True)
class WarmStartConfig:
    method: Literal["ridge", "procrustes", "none"] = "ridge"
    # pairs sampled (seeded) for the fit; None: every training pair (+2.2 nDCG@10 over 4,096 on vi, 3 seeds)
    pairs: int | None = None
    ridge: float = 1.0  # L2 regularisation of the least-squares fit
    english: bool = True  # also fit the student's English side onto the teacher (one map, both languages)
    batch_size: int = 64
    # After the last step, fit the head again the same way through the trained encoder: the
    # encoder learns faster than AdamW moves the head (vi, 130 steps: +3 nDCG@10, docs/results.md).
    refit: bool = True
    # The layers the refitted head (the saved student) reads: last | all | [i, ...]; null:
    # student.layers. Read only with refit: true. Trained through the last layer, refitted on
    # every layer: +1.8 nDCG@10 (p 0.006, 3 seeds) over training through every layer (vi, docs/results.md).
    refit_layers: Literal["last", "all"] | tuple[int, ...] | None = "all"


#: experiment trackers `train.trackers` may name: accelerate's, plus `csv` (optical.training.trackers)
TrackerName = Literal["csv", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive"]


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 2e-5
    head_lr: float | None = None  # learning rate of the projection head (None: lr)
    batch_size: int = 32
    grad_accum: int = 1
    steps: int | None = None  # overrides epochs when set; 0 = warm start only
    epochs: float = 1.0
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0  # 0 or null: no clipping
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: CUDA, else Apple's MPS, else the CPU
    checkpoint_every: int = 500
    eval_every: int = 100
    teacher_cache: bool = True
    trackers: tuple[TrackerName, ...] = ()  # log what log.jsonl gets to these too (<run>/trackers/)


@dataclass(frozen=True)
class EvalConfig:
    task: str = "beir"
    path: str | None = None
    split: str = "test"
    metrics: tuple[str, ...] = ("nDCG@10", "AP@100", "RR@10", "R@10", "R@100")
    query_encoder: str = "teacher"
    doc_encoder: str = "student"
    max_corpus: int | None = None
    index: Literal["flat", "ivf", "hnsw"] = "flat"
    nlist: int = 1024
    nprobe: int = 16
    hnsw_m: int = 32
    batch_size: int = 64


@dataclass(frozen=True)
class Recipe:
    name: str = "distill"
    lang: str = "vi"
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    bitext: BitextConfig = BitextConfig()
    # mse on normalised vectors is ~1/200 of token_ot: weighted ×100 so both terms count (docs/results.md)
    loss: tuple[LossTerm, ...] = (LossTerm("token_ot", 1.0), LossTerm("mse", 100.0))
    ot: OTConfig = OTConfig()
    warm_start: WarmStartConfig = WarmStartConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    output_dir: str = "runs/distill"

    @property
    def saved_layers(self) -> str | tuple[int, ...]:
        """The layers the saved student reads: `warm_start.refit_layers` when the refit sets
        them, else `student.layers`."""
        ws = self.warm_start
        if ws.refit and ws.method != "none" and ws.refit_layers is not None:
            return ws.refit_layers
        return self.student.layers

    def to_dict(self) -> dict:
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------- loading and validation


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        if isinstance(value, LossTerm):
            return {"name": value.name, "weight": value.weight, **value.params}
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _key_lines(node: yaml.Node, prefix: str = "", out: dict | None = None) -> dict[str, int]:
    """Map dotted keys to 1-based line numbers from a composed YAML node tree."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            out[key] = key_node.start_mark.line + 1
            _key_lines(value_node, key + ".", out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[f"{prefix}{i}"] = item.start_mark.line + 1
            _key_lines(item, f"{prefix}{i}.", out)
    return out


@dataclass(frozen=True)
class Flag:
    """A typed change to one recipe key, from a command-line option (`name`, for errors)."""

    key: str  # dotted recipe key, e.g. "bitext.path"
    value: Any  # already typed: never parsed as YAML
    name: str  # the option as the user typed it, e.g. "--bitext"


class _Context:
    """Where values come from, so errors can name file, line and key, or the option that set it."""

    def __init__(self, path: str | None, lines: dict[str, int] | None = None):
        self.path, self.lines = path, lines or {}
        self.sources: dict[str, str] = {}  # dotted key → the option that set it ("--lang", "--set k=v")
        self.raw: dict[str, str] = {}  # dotted key → the --set text, for string fields

    def error(self, key: str, message: str) -> OpticalError:
        probe = key
        while True:
            if probe in self.sources:
                return OpticalError(f"{self.sources[probe]}: {message}")
            if "." not in probe:
                break
            probe = probe.rsplit(".", 1)[0]
        line = self.lines.get(key)
        while line is None and "." in key:
            key_parent = key.rsplit(".", 1)[0]
            line = self.lines.get(key_parent)
            if line is not None:
                break
            key = key_parent
        return OpticalError(f"{where(self.path or '<recipe>', line)}: {message}")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(item, str(item))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, ctx: _Context) -> Any:
    """Check `value` against type `tp` (converting where unambiguous) or raise naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, ctx)
            except OpticalError:
                continue
        raise ctx.error(key, f"{key}: expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ctx.error(key, f"{key}: expected {_describe(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond float range
                number = math.inf
        elif isinstance(value, str):
            try:  # YAML 1.1 reads "2e-5" (no dot) as a string
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            # NaN or inf in a weight, rate or tolerance only ever ends as a NaN loss later
            if not math.isfinite(number):
                raise ctx.error(key, f"{key}: expected a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp is dict:
        if isinstance(value, dict):
            return value
    elif origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # `student.layers: -1` is the list of that one layer
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, item_tp, f"{key}.{i}", ctx) for i, v in enumerate(value))
    raise ctx.error(key, f"{key}: expected {_describe(tp)}, got {value!r}")


def _build(cls: type, data: Any, prefix: str, ctx: _Context) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ctx.error(prefix, f"{prefix or 'recipe'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            raise ctx.error(f"{prefix}{key}", f"{prefix}{key}: unknown key{hint}")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        tp, value, key = hints[name], data[name], f"{prefix}{name}"
        if key in ctx.raw and _takes_text(tp) and not (value is None and _admits_none(tp)):
            value = ctx.raw[key]  # --set student.model=0123 means the text "0123", not 83
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key + ".", ctx)
        elif name == "loss" and cls is Recipe:
            kwargs[name] = _build_loss_terms(value, key, ctx)
        else:
            kwargs[name] = _coerce(value, tp, key, ctx)
    return cls(**kwargs)


def _admits_none(tp: Any) -> bool:
    return tp is type(None) or (typing.get_origin(tp) in (typing.Union, types.UnionType)
                                and type(None) in typing.get_args(tp))


def _takes_text(tp: Any) -> bool:
    """A plain string field (or string-or-null)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return str in typing.get_args(tp)
    return tp is str


def parse_loss_spec(text: str) -> list[dict]:
    """`token_ot:1.0,mse:0.5` → [{'name': 'token_ot', 'weight': 1.0}, ...] (CLI shorthand)."""
    terms = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, weight = part.partition(":")
        terms.append({"name": name.strip(), "weight": weight.strip() or 1.0})
    return terms


def _build_loss_terms(value: Any, key: str, ctx: _Context) -> tuple[LossTerm, ...]:
    from optical.losses import LOSSES, check_loss_params

    if isinstance(value, str):
        value = parse_loss_spec(value)
    if not isinstance(value, (list, tuple)) or not value:
        raise ctx.error(key, f"{key}: expected a non-empty list of loss terms, got {value!r}")
    terms = []
    for i, item in enumerate(value):
        item_key = f"{key}.{i}"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise ctx.error(item_key, f"{item_key}: expected a mapping with 'name', got {item!r}")
        name = item["name"]
        if not isinstance(name, str) or name not in LOSSES:
            raise ctx.error(item_key, f"{item_key}.name: unknown loss {name!r} (known: {', '.join(LOSSES)})")
        weight = _coerce(item.get("weight", 1.0), float, f"{item_key}.weight", ctx)
        params = {k: v for k, v in item.items() if k not in ("name", "weight")}
        problem = check_loss_params(name, params)
        if problem:
            raise ctx.error(item_key, f"{item_key}: {problem}")
        if "english" in params and not isinstance(params["english"], bool):
            raise ctx.error(f"{item_key}.english", f"{item_key}.english: expected true or false, "
                                                   f"got {params['english']!r}")
        if params.get("target") == "image":  # distill reads bitext only: no image embeddings to align to
            raise ctx.error(f"{item_key}.target", f"{item_key}.target: 'image' needs image embeddings, which "
                                                  f"optical distill does not read; use 'text'")
        # a loss-level epsilon overrides ot.epsilon, so it needs the same check
        if "epsilon" in params:
            eps_key = f"{item_key}.epsilon"
            eps = _coerce(params["epsilon"], float, eps_key, ctx)
            if eps <= 0:
                raise ctx.error(eps_key, f"{eps_key}: must be > 0, got {eps}")
            params["epsilon"] = eps
        terms.append(LossTerm(name, weight, params))
    return tuple(terms)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


#: what PyYAML raises besides YAMLError: deep nesting (RecursionError), a date like
#: 2024-13-01 (ValueError), an unhashable mapping key (TypeError)
_YAML_VALUE_ERRORS = (RecursionError, ValueError, TypeError, OverflowError)


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=2e-5` → ('train.lr', 2e-05). Values are read as YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise OpticalError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=2e-5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, *_YAML_VALUE_ERRORS):
        value = raw
    return key.strip(), value


def recipe_from_dict(data: dict, overrides: list[str | Flag] = (), path: str | None = None,
                     lines: dict[str, int] | None = None) -> Recipe:
    """Validate a plain dict (as read from YAML) plus changes into a Recipe. `overrides` are
    ``"KEY=VALUE"`` strings (``--set``) and :class:`Flag` values, applied in order."""
    data = dict(data or {})
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    ctx = _Context(path, lines)
    for item in overrides:
        if isinstance(item, Flag):
            key, value, source = item.key, item.value, item.name
            ctx.raw.pop(key, None)
        else:
            key, value = parse_override(item)
            source = f"--set {item}"
            ctx.raw.pop(key, None)
            if not isinstance(value, str):  # YAML read a number, bool or date: a string field wants the text
                ctx.raw[key] = item.partition("=")[2].strip()
        _set_dotted(data, key, value)
        ctx.sources[key] = source
    recipe = _build(Recipe, data, "", ctx)
    _check_consistency(recipe, ctx)
    return recipe


def _check_consistency(recipe: Recipe, ctx: _Context) -> None:
    t = recipe.train
    for key, value in (("train.batch_size", t.batch_size), ("train.grad_accum", t.grad_accum),
                       ("ot.max_iter", recipe.ot.max_iter)):
        if value < 1:
            raise ctx.error(key, f"{key}: must be at least 1, got {value}")
    if t.steps is not None and t.steps < 0:
        raise ctx.error("train.steps", f"train.steps: must be >= 0, got {t.steps}")
    if recipe.ot.epsilon <= 0:
        raise ctx.error("ot.epsilon", f"ot.epsilon: must be > 0, got {recipe.ot.epsilon}")
    if recipe.ot.rho is not None and recipe.ot.rho <= 0:
        raise ctx.error("ot.rho", f"ot.rho: must be > 0 or null, got {recipe.ot.rho}")
    if t.lr <= 0:
        raise ctx.error("train.lr", f"train.lr: must be > 0, got {t.lr}")
    if t.head_lr is not None and t.head_lr <= 0:
        raise ctx.error("train.head_lr", f"train.head_lr: must be > 0 or null, got {t.head_lr}")
    if t.weight_decay < 0:
        raise ctx.error("train.weight_decay", f"train.weight_decay: must be >= 0, got {t.weight_decay}")
    if t.epochs <= 0:
        raise ctx.error("train.epochs", f"train.epochs: must be > 0, got {t.epochs}")
    if not 0 <= t.warmup_ratio <= 1:
        raise ctx.error("train.warmup_ratio", f"train.warmup_ratio: must be in [0, 1], got {t.warmup_ratio}")
    # a negative clipping norm flips the gradient (silent ascent); 0 means no clipping
    if t.max_grad_norm is not None and t.max_grad_norm < 0:
        raise ctx.error("train.max_grad_norm", f"train.max_grad_norm: must be >= 0 (0 = no clipping), "
                                               f"got {t.max_grad_norm}")
    for i, name in enumerate(t.trackers):
        if name in t.trackers[:i]:
            raise ctx.error(f"train.trackers.{i}", f"train.trackers: {name!r} is listed twice")
    if recipe.warm_start.pairs is not None and recipe.warm_start.pairs < 1:
        raise ctx.error("warm_start.pairs", f"warm_start.pairs: must be at least 1 or null, got {recipe.warm_start.pairs}")
    if not 0 <= recipe.bitext.max_bad_fraction <= 1:
        raise ctx.error("bitext.max_bad_fraction",
                        f"bitext.max_bad_fraction: must be in [0, 1], got {recipe.bitext.max_bad_fraction}")
    if recipe.student.layers == ():
        raise ctx.error("student.layers", "student.layers: name at least one layer, or last / all")
    if recipe.student.dropout is not None and not 0 <= recipe.student.dropout < 1:
        raise ctx.error("student.dropout", f"student.dropout: must be in [0, 1) or null, got {recipe.student.dropout}")
    if isinstance(recipe.student.new_tokens, int) and recipe.student.new_tokens < 0:
        raise ctx.error("student.new_tokens", f"student.new_tokens: must be auto or >= 0, got {recipe.student.new_tokens}")
    for key in ("query_encoder", "doc_encoder"):  # a mixture's mistake shows at load, not after training
        try:
            parse_mixture(getattr(recipe.eval, key))
        except OpticalError as err:
            raise ctx.error(f"eval.{key}", f"eval.{key}: {err}") from None
    if recipe.warm_start.refit_layers == ():
        raise ctx.error("warm_start.refit_layers", "warm_start.refit_layers: name at least one layer, or last / all")
    for key, value in (("student.max_length", recipe.student.max_length),
                       ("teacher.max_length", recipe.teacher.max_length)):
        if value < 1:
            raise ctx.error(key, f"{key}: must be at least 1, got {value}")


def load_recipe(path: str | Path, overrides: list[str | Flag] = ()) -> Recipe:
    """Read a recipe YAML file; every problem is one OpticalError line naming file, line, key.

    ``path`` is a file, or a shipped recipe by name (``vi/quickstart``, as
    ``optical distill --recipe`` takes it): a name is anything that is not an existing file
    and does not end in ``.yaml``/``.yml``.
    """
    path = Path(path)
    if not path.is_file() and path.suffix not in (".yaml", ".yml"):
        from optical.recipe_files import find_recipe

        path = find_recipe(str(path))  # OpticalError naming the shipped recipes if unknown
    if not path.is_file():
        raise OpticalError(f"{path}: recipe file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise OpticalError(f"{where(path, line)}: not valid UTF-8; save the recipe as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        raise OpticalError(f"{where(path, line)}: invalid YAML: {problem}") from None
    except RecursionError:
        raise OpticalError(f"{path}: invalid YAML: nested too deeply") from None
    except _YAML_VALUE_ERRORS as err:
        raise OpticalError(f"{path}: invalid YAML: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if data is not None and not isinstance(data, dict):
        raise OpticalError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    lines = _key_lines(node) if node is not None else {}
    return recipe_from_dict(data or {}, overrides, str(path), lines)


#: keys a resumed run may change: where it writes, its label, progress reports, trackers, the evaluation
RESUME_FREE = ("output_dir", "name", "train.eval_every", "train.checkpoint_every", "train.teacher_cache", "train.device",
               "train.trackers", "eval")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists → {dotted key: leaf value}."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return {prefix[:-1]: data}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}{key}."))
    return out if out else {prefix[:-1]: data}


def recipe_differences(old: Recipe, new: Recipe, free: tuple[str, ...] = RESUME_FREE) -> list[tuple[str, Any, Any]]:
    """Every key (in recipe order) whose value differs between two recipes, ignoring the
    `free` keys and sections: [(key, old value, new value), ...]."""
    a, b = flatten(old.to_dict()), flatten(new.to_dict())
    missing = object()
    changes = []
    for key in dict.fromkeys([*a, *b]):
        if any(key == f or key.startswith(f + ".") for f in free):
            continue
        if a.get(key, missing) != b.get(key, missing):
            changes.append((key, a.get(key), b.get(key)))
    return changes
