"""Hyper-parameters: the dataclasses the methods share (each method's own is in its module), loaded from
YAML/JSON (shipped under editkit/hparams/<method>/) and overridden with `key=value` strings, as `--hparams FILE`
and `--set` pass them."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from editkit.edit.registry import get
from editkit.errors import EditkitError
from editkit.io import read_text
from editkit.toy import NAME, is_toy

HPARAMS_DIR = Path(__file__).resolve().parents[1] / "hparams"


def bounded(default, *, ge: float | None = None, gt: float | None = None, le: float | None = None):
    """A field with a lower bound (`ge`: at least, `gt`: above) and optionally an upper one (`le`: at most),
    checked by `validate`; a list default is copied per instance."""
    meta = {"ge": ge, "gt": gt, "le": le}
    if isinstance(default, list):
        return field(default_factory=lambda: [list(x) if isinstance(x, list) else x for x in default], metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class EditHParams:
    """What every method has: the layers whose MLP output projections it writes, and a seed."""

    #: distinct; -1 is the last layer (checked against the model when editing)
    layers: list[int] = field(default_factory=lambda: [0])
    seed: int = bounded(0, ge=0)

    @property
    def needs_stats(self) -> bool:
        """Whether the method reads the second-moment statistics C (`StatsHParams` and its subclasses do)."""
        return False


@dataclass
class StatsHParams(EditHParams):
    """Where the second-moment statistics C = E[k kᵀ] come from: a corpus and a token budget."""

    mom2_corpus: str = "samples:2000"  # editkit.corpus: works offline for any model
    mom2_n_tokens: int = bounded(100_000, ge=1)

    @property
    def needs_stats(self) -> bool:
        return True


@dataclass
class TargetHParams(StatsHParams):
    """Finding the target value v* (ROME §3.1 step 2, MEMIT's z): optimise δ at the last subject token."""

    #: loss evaluations; the last one only measures, so 2 is one Adam step
    v_num_grad_steps: int = bounded(20, ge=2)
    v_lr: float = bounded(0.5, gt=0)
    v_weight_decay: float = bounded(0.5, ge=0)
    kl_factor: float = bounded(0.0625, ge=0)
    clamp_norm_factor: float = bounded(4.0, gt=0)
    #: a request also stops once its target's probability (exp of its mean NLL over the prompts) reaches this
    v_stop_prob: float | None = bounded(None, gt=0, le=1)
    #: ... or once its best loss of the last v_plateau_steps steps is less than v_plateau_tol (relative) below
    #: its best before them (0: no plateau stop); besides the papers' stop, loss < 5e-2
    v_plateau_steps: int = bounded(0, ge=0)
    v_plateau_tol: float = bounded(0.02, ge=0, le=1)
    #: (length in tokens, count) of the generated context prefixes, each >= 1; the bare prompt is always added.
    context_templates: list[list[int]] = bounded([[5, 10], [10, 10]], ge=1)
    #: PRUNE (Ma et al. 2025), off when None: singular values σ of the accumulated edit ΔW (over the whole edit
    #: sequence) at or above σ_max of the original W become σ_max + log_prune(σ/σ_max); the value is the log base
    prune: float | None = bounded(None, gt=1)
    #: RECT (Gu et al. 2024), off when None: each update keeps only this fraction of its elements, those with the
    #: largest relative change |ΔW|/|W|; the rest are zeroed
    rect: float | None = bounded(None, gt=0, le=1)


#: Hub ids and directory names -> the shipped file's model key.
_MODEL_KEYS = {
    "gpt2-xl": "gpt2-xl",
    "gpt-j-6b": "gpt-j-6b",
    "llama-2-7b": "llama-2-7b",
    "smollm2-135m": "smollm2-135m",
    "smollm2-135m-instruct": "smollm2-135m",
    "gemma3-270m": "gemma3-270m",
    "gemma-3-270m": "gemma3-270m",
}


def model_key(name_or_path: str) -> str | None:
    """The shipped hparams key of a model name ('EleutherAI/gpt-j-6B' -> 'gpt-j-6b'), or None."""
    if is_toy(name_or_path):
        return NAME
    base = name_or_path.rstrip("/").split("/")[-1].lower().removesuffix("-hf")
    return _MODEL_KEYS.get(base)


def shipped_file(method: str, model: str) -> Path:
    """The hparams file editkit ships for `method` on `model`, or a clear error listing what exists."""
    get(method)
    key = model_key(model)
    path = HPARAMS_DIR / method / f"{key}.yaml"
    if key is None or not path.exists():
        have = sorted(p.stem for p in (HPARAMS_DIR / method).glob("*.yaml"))
        raise EditkitError(
            f"no shipped {method} hparams for model {model!r} (editkit ships: {', '.join(have)}); "
            f"pass --hparams FILE (YAML or JSON)"
        )
    return path


def read_file(path: str | Path) -> dict:
    """A YAML or JSON mapping from `path`."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise EditkitError(f"hparams file {path} does not exist; pass a YAML or JSON file")
    try:
        text = read_text(path, "hparams file")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise EditkitError(f"hparams file {path} is not valid {path.suffix[1:].upper() or 'YAML'}: {e}") from None
    if not isinstance(data, dict):
        raise EditkitError(f"hparams file {path} must hold a mapping of names to values")
    return data


def parse_override(text: str) -> tuple[str, object]:
    """'key=value' -> (key, value parsed as YAML: numbers, booleans, lists like [13,14])."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise EditkitError(f"--set {text!r} (command line) is not key=value; write e.g. --set v_lr=0.1")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise EditkitError(
            f"--set {text!r} (command line): the value of {key.strip()} is not valid YAML ({problem}); "
            "write e.g. --set layers=[1,2] or --set v_lr=0.1"
        ) from None
    if isinstance(parsed, str):  # YAML 1.1 reads '5e-3' (no dot) as a string
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip(), parsed


def build(method: str, values: dict, source: str | dict[str, str] = "hparams"):
    """The method's dataclass from its presets with a mapping on top; unknown keys, wrong types and values out of
    range are clear errors naming the field and where its value came from (`source`: one name, or one per key)."""
    spec = get(method)
    values = {**spec.presets, **values}
    origin = (lambda k: source.get(k, "hparams")) if isinstance(source, dict) else (lambda k: source)
    cls = spec.hparams
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise EditkitError(
            f"{origin(unknown[0])}: unknown {method} hyper-parameter {unknown[0]!r}; known: {', '.join(fields)}"
        )
    hp = cls(**values)
    for name, f in fields.items():
        problem = check_value(getattr(hp, name), f)
        if problem:
            raise EditkitError(f"{origin(name)}: {name}={getattr(hp, name)!r} {problem}")
    return hp


def check_value(value, f: dataclasses.Field) -> str | None:
    """What is wrong with `value` for field `f` (its type, its bound, or a rule of its own), or None."""
    annotation = _type_name(f.type)
    if not _is_type(value, annotation):
        return f"should be of type {annotation}"
    if f.name == "layers":
        if not value:
            return "is empty; give at least one layer, e.g. layers=[3]"
        if len(set(value)) < len(value):
            return "repeats a layer; give each layer once"
    if f.name == "context_templates" and any(len(pair) != 2 for pair in value):
        return "should be a list of [length, count] pairs, e.g. [[5, 10], [10, 10]]"
    numbers = value if isinstance(value, list) else [value]
    numbers = [x for v in numbers for x in (v if isinstance(v, list) else [v]) if isinstance(x, int | float)]
    if any(not math.isfinite(x) for x in numbers):
        return "must be a finite number"
    ge, gt = f.metadata.get("ge"), f.metadata.get("gt")
    if ge is not None and any(x < ge for x in numbers):
        return f"must be >= {ge:g}" + (
            " (the last step only measures the loss)" if f.name == "v_num_grad_steps" else ""
        )
    if gt is not None and any(x <= gt for x in numbers):
        return f"must be > {gt:g}"
    le = f.metadata.get("le")
    if le is not None and any(x > le for x in numbers):
        return f"must be <= {le:g}"
    return None


def _type_name(annotation) -> str:
    """A field's type as the string `_is_type` reads ('int', 'float | None', 'list[list[int]]'), whether the
    method's module postpones annotations (strings) or not (types)."""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return str(annotation).replace("NoneType", "None")


def _is_type(value, annotation: str) -> bool:
    """Whether `value` has the type an annotation string names ('int', 'float | None', 'list[list[int]]', ...)."""
    for alt in (a.strip() for a in annotation.split("|")):
        if alt.startswith("list[") and alt.endswith("]"):
            if isinstance(value, list) and all(_is_type(v, alt[5:-1]) for v in value):
                return True
        elif {
            "None": value is None,
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "str": isinstance(value, str),
        }.get(alt, False):
            return True
    return False


def load_hparams(method: str, model: str | None = None, file: str | Path | None = None, overrides=()):
    """Hyper-parameters of `method`: from `file`, else the shipped file for `model`; then `overrides`
    ('key=value' strings, from the command line) on top."""
    path = Path(file) if file is not None else shipped_file(method, model or "")
    values = {k: v for k, v in read_file(path).items() if k != "method"}
    origin = dict.fromkeys(values, str(path))
    for text in overrides:
        key, value = parse_override(text)
        values[key], origin[key] = value, f"--set {text} (command line)"
    return build(method, values, source=origin)


def to_dict(hp) -> dict:
    return dataclasses.asdict(hp)
