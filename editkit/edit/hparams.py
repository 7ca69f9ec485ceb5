"""Hyper-parameters: one dataclass per method, loaded from YAML/JSON (shipped under editkit/hparams/<method>/)
and overridden with `key=value` strings, as `--hparams FILE` and `--set` pass them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from editkit.errors import EditkitError

HPARAMS_DIR = Path(__file__).resolve().parents[1] / "hparams"


@dataclass
class EditHParams:
    """What every method has: the layers whose MLP output projections it writes, and a seed."""

    layers: list[int] = field(default_factory=lambda: [0])
    seed: int = 0


@dataclass
class StatsHParams(EditHParams):
    """Where the second-moment statistics C = E[k kᵀ] come from: a corpus and a token budget."""

    mom2_corpus: str = "toy"
    mom2_n_tokens: int = 100_000


@dataclass
class TargetHParams(StatsHParams):
    """Finding the target value v* (ROME §3.1 step 2, MEMIT's z): optimise δ at the last subject token."""

    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    kl_factor: float = 0.0625
    clamp_norm_factor: float = 4.0
    #: (length in tokens, count) of the generated context prefixes; the bare prompt is always added.
    context_templates: list[list[int]] = field(default_factory=lambda: [[5, 10], [10, 10]])


@dataclass
class FTHParams(EditHParams):
    """Fine-tuning the MLP output weights of `layers` on the requests; FT-L clamps the change to ±norm_constraint."""

    num_steps: int = 25
    lr: float = 5e-4
    norm_constraint: float | None = None


@dataclass
class ROMEHParams(TargetHParams):
    """ROME (Meng et al. 2022); `original_key: false` is r-ROME (Gupta et al. 2024)."""

    mom2_adjustment: bool = True
    original_key: bool = True


@dataclass
class SpreadHParams(TargetHParams):
    """Shared by MEMIT and AlphaEdit: z at the last of `layers`, the residual spread over all of them."""

    clamp_norm_factor: float = 0.75
    context_templates: list[list[int]] = field(default_factory=lambda: [[10, 5]])


@dataclass
class MEMITHParams(SpreadHParams):
    """MEMIT (Meng et al. 2023): λ = mom2_update_weight weighs the preserved keys' covariance."""

    mom2_update_weight: float = 15000.0


@dataclass
class AlphaEditHParams(SpreadHParams):
    """AlphaEdit (Fang et al. 2025): the update projected onto the null space of C (eigenvalues below
    nullspace_threshold), with ridge L2 instead of λC."""

    nullspace_threshold: float = 2e-2
    L2: float = 10.0


HPARAM_CLASSES: dict[str, type] = {
    "ft": FTHParams,
    "ft-l": FTHParams,
    "rome": ROMEHParams,
    "r-rome": ROMEHParams,
    "memit": MEMITHParams,
    "alphaedit": AlphaEditHParams,
}

#: Hub ids and directory names -> the shipped file's model key.
_MODEL_KEYS = {
    "gpt2-xl": "gpt2-xl",
    "gpt-j-6b": "gpt-j-6b",
    "llama-2-7b": "llama-2-7b",
    "toy": "toy",
    "smollm2-135m": "smollm2-135m",
    "smollm2-135m-instruct": "smollm2-135m",
}


def model_key(name_or_path: str) -> str | None:
    """The shipped hparams key of a model name ('EleutherAI/gpt-j-6B' -> 'gpt-j-6b'), or None."""
    if name_or_path == "toy" or Path(name_or_path).resolve() == (HPARAMS_DIR.parents[1] / "data/toy/model").resolve():
        return "toy"
    base = name_or_path.rstrip("/").split("/")[-1].lower().removesuffix("-hf")
    return _MODEL_KEYS.get(base)


def shipped_file(method: str, model: str) -> Path:
    """The hparams file editkit ships for `method` on `model`, or a clear error listing what exists."""
    check_method(method)
    key = model_key(model)
    path = HPARAMS_DIR / method / f"{key}.yaml"
    if key is None or not path.exists():
        have = sorted(p.stem for p in (HPARAMS_DIR / method).glob("*.yaml"))
        raise EditkitError(
            f"no shipped {method} hparams for model {model!r} (editkit ships: {', '.join(have)}); "
            f"pass --hparams FILE (YAML or JSON)"
        )
    return path


def check_method(method: str) -> None:
    if method not in HPARAM_CLASSES:
        raise EditkitError(f"unknown edit method {method!r}; use one of {', '.join(HPARAM_CLASSES)}")


def read_file(path: str | Path) -> dict:
    """A YAML or JSON mapping from `path`."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise EditkitError(f"hparams file {path} does not exist; pass a YAML or JSON file")
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
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
        raise EditkitError(f"--set {text!r} is not key=value; write e.g. --set v_lr=0.1")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads '5e-3' (no dot) as a string
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip(), parsed


def build(method: str, values: dict, source: str = "hparams"):
    """The method's dataclass from a mapping; unknown keys and wrong types are clear errors."""
    check_method(method)
    if method == "r-rome":
        values = {"original_key": False, **values}
    cls = HPARAM_CLASSES[method]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise EditkitError(f"{source}: unknown {method} hyper-parameter {unknown[0]!r}; known: {', '.join(fields)}")
    hp = cls(**values)
    for name, f in fields.items():
        _check_type(getattr(hp, name), f.type, name, source)
    if not hp.layers:
        raise EditkitError(f"{source}: layers is empty; give at least one layer, e.g. layers=[3]")
    return hp


def _check_type(value, annotation: str, name: str, source: str) -> None:
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "float | None": value is None or (isinstance(value, int | float) and not isinstance(value, bool)),
        "list[int]": isinstance(value, list) and all(isinstance(v, int) for v in value),
        "list[list[int]]": isinstance(value, list) and all(isinstance(v, list) and len(v) == 2 for v in value),
    }[annotation]
    if not ok:
        raise EditkitError(f"{source}: {name}={value!r} should be of type {annotation}")


def load_hparams(method: str, model: str | None = None, file: str | Path | None = None, overrides=()):
    """Hyper-parameters of `method`: from `file`, else the shipped file for `model`; then `overrides`
    ('key=value' strings) on top."""
    path = Path(file) if file is not None else shipped_file(method, model or "")
    values = {k: v for k, v in read_file(path).items() if k != "method"}
    values.update(parse_override(o) for o in overrides)
    return build(method, values, source=str(path))


def to_dict(hp) -> dict:
    return dataclasses.asdict(hp)
