"""Sparse autoencoders in the SAELens on-disk format: `cfg.json` + `sae_weights.safetensors` holding
`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]` and per-feature tensors `[d_sae]` (`b_enc`,
`threshold`, …) named as SAELens names them.

    f = act((x − b_dec) W_enc + b_enc)        x̂ = f W_dec + b_dec

A transcoder (`d_out` set) reads one hook and predicts another (an MLP's input → its output, Dunefsky et
al. 2024): `W_dec [d_sae, d_out]`, `b_dec [d_out]`, and its encoder never subtracts b_dec (`apply_b_dec_to_input`
is False, as SAELens requires), `ŷ = act(x W_enc + b_enc) W_dec + b_dec`. It is saved as SAELens 6 saves
transcoders (`architecture` "transcoder" for a ReLU encoder, "jumprelu_transcoder"; `d_out` beside `d_in`,
`hook_name_out` in `metadata`); SAELens has no TopK or gated transcoder, so those are written as
"topk_transcoder" / "gated_transcoder", which only editkit opens.
`SAE` is the base class; each architecture (its activation, training loss and SAELens names) is one module
of `editkit.features.saes`, registered by its file name. `SAE(cfg)` builds the class of `cfg.architecture`.
`cfg.json` is written with the keys of SAELens ≥ 6 (`metadata` holds model and hook) and, flat beside them,
the keys older SAELens versions read (`hook_name`, `activation_fn_kwargs`, …), so either loads it.
`prepend_bos` (in `metadata` and flat) says whether every text it was trained on started with the tokenizer's
BOS; editkit puts it first wherever it reads text for the SAE (`SAE.bos`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from editkit.errors import EditkitError
from editkit.io import atomic_directory, read_json
from editkit.tensors import dtype_of
from editkit.tokens import bos_to_prepend

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
EDITKIT_FORMAT = 2  # 2: `prepend_bos` says what training did (format 1 wrote true and prepended nothing)
NORMALISATIONS = ("none", "expected_average_only_in")
_SHARED = ("W_enc", "W_dec", "b_dec")  # every other tensor is per feature, [d_sae]


def architecture_class(name: str) -> type[SAE]:
    """The SAE class registered as (or aliased) `name`."""
    from editkit.features.saes import get

    return get(name)


@dataclass
class SAEConfig:
    """Shape, architecture, where it reads (model, hook) and how it was (or will be) trained."""

    d_in: int
    d_sae: int
    architecture: str = "standard"
    k: int | None = None
    hook_name: str = ""
    hook_name_out: str = ""  # transcoders: the hook they predict
    d_out: int | None = None  # transcoders: the width they predict (None: an SAE)
    model_name: str = ""
    dtype: str = "float32"
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    rescale_acts_by_decoder_norm: bool = False
    # training
    lr: float = 4e-4
    lr_warm_up_steps: int = 100
    lr_decay_steps: int = 0
    l1_coefficient: float = 5.0
    l1_warm_up_steps: int = 500  # the sparsity coefficient's (L1 or L0) linear warm-up
    l0_coefficient: float = 1.0
    jumprelu_bandwidth: float = 0.05
    jumprelu_init_threshold: float = 0.01
    aux_k_coefficient: float = 1 / 32
    topk_threshold_lr: float = 0.01
    matryoshka_widths: list[int] | None = None
    training_architecture: str = ""  # the architecture it was trained as, where it is saved as another
    batch_size: int = 2048
    training_steps: int = 2000
    dead_feature_window: int = 500
    resample_every: int = 500
    resample_until: float = 0.6
    seed: int = 0
    context_size: int = 128
    prepend_bos: bool = False  # every text starts with the tokenizer's BOS (SAELens / TransformerLens)
    dataset_path: str = ""

    def __post_init__(self) -> None:
        cls = architecture_class(self.architecture)
        self.architecture = cls.name
        if self.d_in <= 0 or self.d_sae <= 0:
            raise EditkitError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.normalize_activations not in NORMALISATIONS:
            raise EditkitError(
                f"normalize_activations {self.normalize_activations!r} is not supported; "
                f"use {' or '.join(NORMALISATIONS)}"
            )
        dtype_of(self.dtype, "SAE dtype")
        if self.is_transcoder:
            if self.d_out <= 0:
                raise EditkitError(f"a transcoder's d_out must be positive, got {self.d_out}")
            if not cls.saelens_transcoder:
                raise EditkitError(f"a {cls.name} SAE cannot be trained as a transcoder; use --arch topk or standard")
            self.apply_b_dec_to_input = False  # b_dec lives in the output space
        cls.check_config(self)

    @property
    def is_transcoder(self) -> bool:
        return self.d_out is not None

    @property
    def width_out(self) -> int:
        """The width of what it reconstructs (d_out for a transcoder, else d_in)."""
        return self.d_in if self.d_out is None else self.d_out

    @property
    def layer(self) -> int | None:
        return _layer(self.hook_name)

    def to_saelens(self) -> dict:
        """cfg.json: SAELens ≥ 6 keys, pre-6 keys beside them, and editkit's training settings."""
        cls = architecture_class(self.architecture)
        transcoder = {"hook_name_out": self.hook_name_out, "hook_layer_out": _layer(self.hook_name_out)}
        transcoder = {**transcoder, "hook_head_index_out": None} if self.is_transcoder else {}
        meta = {
            "model_name": self.model_name,
            "hook_name": self.hook_name,
            "hook_layer": self.layer,
            "hook_head_index": None,
            "context_size": self.context_size,
            "prepend_bos": self.prepend_bos,
            "dataset_path": self.dataset_path,
            "sae_lens_version": "6.0.0",
            "sae_lens_training_version": "6.0.0",
            **transcoder,
        }
        own = asdict(self) if self.is_transcoder else {k: v for k, v in asdict(self).items() if k != "hook_name_out"}
        return {
            **{k: v for k, v in own.items() if v is not None},
            "architecture": cls.saelens_transcoder if self.is_transcoder else cls.saelens_architecture,
            "device": "cpu",
            "reshape_activations": "none",
            "metadata": meta,
            **{k: v for k, v in meta.items() if k not in ("sae_lens_version", "sae_lens_training_version")},
            "activation_fn_str": "relu",
            "activation_fn_kwargs": {},
            "finetuning_scaling_factor": False,
            "dataset_trust_remote_code": False,
            "model_from_pretrained_kwargs": {},
            "sae_lens_version": "6.0.0",
            "editkit": True,
            "editkit_format": EDITKIT_FORMAT,
            **cls.saelens_fields(self),
        }

    @classmethod
    def from_saelens(cls, raw: dict, where: str = CFG) -> SAEConfig:
        """Read a cfg.json of any SAELens version (flat keys, or `metadata`/`meta` with model and hook)."""
        meta = raw.get("metadata") or raw.get("meta") or {}
        name = raw.get("architecture", "standard")
        act = raw.get("activation_fn_str") or raw.get("activation_fn") or "relu"
        transcoders = _saelens_transcoders()
        if act != "relu" and name not in transcoders:  # SAELens < 6 named TopK by its activation function
            name = act
        try:
            arch = transcoders[name] if name in transcoders else architecture_class(name)
        except EditkitError:
            raise EditkitError(
                f"{where}: SAE architecture {name!r} is not supported; editkit reads "
                f"{', '.join(_saelens_names())} (refusing rather than dropping what it does not know)"
            ) from None
        if name in transcoders and not isinstance(raw.get("d_out"), int):
            raise EditkitError(f"{where}: a {name} needs d_out (the width it predicts); SAELens writes it beside d_in")
        if name not in transcoders and arch.saelens_architecture != name and raw.get("architecture") == name:
            raise EditkitError(
                f"{where}: architecture {name!r} is a SAELens training checkpoint; save it for inference "
                f"(SAELens save_inference_model writes it as {arch.saelens_architecture!r}) and load that"
            )
        if "d_in" not in raw or "d_sae" not in raw:
            raise EditkitError(f"{where}: missing d_in or d_sae; an SAELens cfg.json has both")
        own = arch.read_saelens(raw, where)
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in raw.items() if k in names and k != "architecture" and k not in own}
        known["hook_name"] = raw.get("hook_name") or raw.get("hook_point") or meta.get("hook_name") or ""
        known["hook_name_out"] = raw.get("hook_name_out") or meta.get("hook_name_out") or ""
        known["d_out"] = raw["d_out"] if name in transcoders else None
        known["model_name"] = raw.get("model_name") or meta.get("model_name") or ""
        norm = known.get("normalize_activations")
        known["normalize_activations"] = "none" if norm in (None, False) else norm
        known["context_size"] = known.get("context_size") or meta.get("context_size") or 128
        known["dataset_path"] = known.get("dataset_path") or meta.get("dataset_path") or ""
        known["prepend_bos"] = _prepend_bos(raw, meta, where)
        known["dtype"] = str(known.get("dtype", "float32")).removeprefix("torch.")
        return cls(architecture=arch.name, **own, **known)


def _prepend_bos(raw: dict, meta: dict, where: str) -> bool:
    """Whether the SAE was trained on text with a BOS first: `metadata.prepend_bos` (SAELens ≥ 6), else the
    flat key (older SAELens), else true, SAELens's default (its training config and its loader of pre-6 files).
    editkit files before format 2 say true, but editkit never prepended a BOS then: they read as false."""
    if raw.get("editkit") is True and raw.get("editkit_format", 1) < 2:
        return False
    value = meta.get("prepend_bos")
    value = raw.get("prepend_bos") if value is None else value
    value = True if value is None else value
    if not isinstance(value, bool):
        raise EditkitError(f"{where}: prepend_bos must be true or false, got {value!r}")
    return value


def _saelens_names() -> list[str]:
    from editkit.features.saes import classes

    return sorted({c.saelens_architecture for c in classes()} | set(_saelens_transcoders()))


def _saelens_transcoders() -> dict[str, type[SAE]]:
    """Transcoder `architecture` names of cfg.json → the class that reads them."""
    from editkit.features.saes import classes

    return {c.saelens_transcoder: c for c in classes() if c.saelens_transcoder and c.for_inference is SAE.for_inference}


def _layer(hook_name: str) -> int | None:
    parts = hook_name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None


def _small_rows(rows: int, width: int, g: torch.Generator) -> torch.Tensor:
    """Kaiming-uniform `[rows, width]` with every row rescaled to norm 0.1."""
    w = torch.empty(rows, width, dtype=torch.float32)
    bound = (6 / width) ** 0.5
    w.uniform_(-bound, bound, generator=g)
    return 0.1 * w / w.norm(dim=1, keepdim=True)


class SAE(nn.Module):
    """One sparse autoencoder: `encode`, `decode`, `forward` (= decode ∘ encode), SAELens-format files.

    A subclass (one module of `editkit.features.saes`) sets its SAELens names and implements `features`
    (activations and the pre-activations its loss reads) and `training_loss`.
    """

    name: ClassVar[str] = ""  # set by `saes.register` from the module's file name
    aliases: ClassVar[tuple[str, ...]] = ()
    saelens_architecture: ClassVar[str] = ""  # `architecture` of the file it saves as (for inference)
    saelens_transcoder: ClassVar[str] = ""  # the same, as a transcoder ("" where it cannot be one)
    tensors: ClassVar[tuple[str, ...]] = ("W_enc", "b_enc", "W_dec", "b_dec")
    encoder_biases: ClassVar[tuple[str, ...]] = ("b_enc",)  # per-feature; zeroed on resampling
    thresholds: ClassVar[tuple[str, ...]] = ()  # per-feature; scaled with the encoder when folding
    unit_decoder: ClassVar[bool] = False  # decoder rows held at unit norm while training

    def __new__(cls, cfg: SAEConfig | None = None, *args, **kwargs):
        if cls is SAE and cfg is not None:
            cls = architecture_class(cfg.architecture)
        return super().__new__(cls)

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        self.source = ""  # the directory it was loaded from, to name it in messages
        dtype = dtype_of(cfg.dtype)
        g = torch.Generator().manual_seed(cfg.seed)
        # April 2024 update: small decoder norms, W_enc = W_decᵀ (a transcoder's encoder drawn alike, apart)
        w_dec = _small_rows(cfg.d_sae, cfg.width_out, g)
        w_enc = _small_rows(cfg.d_sae, cfg.d_in, g) if cfg.is_transcoder else w_dec
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        self.W_enc = nn.Parameter(w_enc.T.clone().contiguous().to(dtype))
        for name in self.tensors:
            if name not in _SHARED:
                setattr(self, name, nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype)))
        self.b_dec = nn.Parameter(torch.zeros(cfg.width_out, dtype=dtype))

    # --- what a subclass defines ---------------------------------------------------------------------------

    @classmethod
    def check_config(cls, cfg: SAEConfig) -> None:
        """Refuse settings this architecture cannot use (one clear line)."""

    @classmethod
    def saelens_fields(cls, cfg: SAEConfig) -> dict:
        """Architecture-specific cfg.json keys (those of SAELens's config class, pre-6 keys beside them)."""
        return {}

    @classmethod
    def read_saelens(cls, raw: dict, where: str) -> dict:
        """SAEConfig fields this architecture reads from a SAELens cfg.json."""
        return {}

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature activations, the pre-activations the training loss reads)."""
        raise NotImplementedError

    def training_loss(
        self, x: torch.Tensor, y: torch.Tensor, coefficient: float, dead: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, feature activations, reconstruction of y) of a training batch of inputs x and targets y
        (y is x for an SAE); `dead` flags dead features."""
        raise NotImplementedError

    def coefficient(self, step: int) -> float:
        """The sparsity coefficient at `step`: `l1_coefficient`, warmed up linearly."""
        return self.cfg.l1_coefficient * self.warm_up(step)

    def warm_up(self, step: int) -> float:
        """Linear warm-up of the sparsity coefficient over `l1_warm_up_steps`."""
        return min(1.0, (step + 1) / max(1, self.cfg.l1_warm_up_steps))

    def after_step(self, f: torch.Tensor) -> None:
        """Called after each optimiser step with the batch's feature activations."""

    def for_inference(self) -> SAE:
        """The SAE as it is saved and used after training (itself, unless trained in another form)."""
        return self

    # --- shared ---------------------------------------------------------------------------------------------

    def sae_in(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input, `x − b_dec` (or `x` when `apply_b_dec_to_input` is off)."""
        x = x.to(self.W_enc.dtype)
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations `(x − b_dec) W_enc + b_enc`."""
        return self.sae_in(x) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations `[..., d_sae]` of activations `[..., d_in]`."""
        self.check_width(x.shape[-1])
        return self.features(x)[0]

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction `f W_dec + b_dec`."""
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @staticmethod
    def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Squared reconstruction error summed over the width, averaged over the batch."""
        return (x_hat - x).pow(2).sum(-1).mean()

    @torch.no_grad()
    def fold(self, scale: float, scale_out: float | None = None) -> None:
        """Fold the training scales of input and target (`scale_out`, default `scale`) and the decoder norms
        into the weights (the function is unchanged)."""
        scale_out = scale if scale_out is None else scale_out
        self.W_enc *= scale
        self.W_dec /= scale_out
        self.b_dec /= scale_out
        norms = self.W_dec.norm(dim=1)
        self.W_dec /= norms[:, None]
        self.W_enc *= norms[None]
        for name in self.encoder_biases + self.thresholds:
            getattr(self, name).mul_(norms)
        self.cfg.normalize_activations = "none"

    def check_width(self, width: int, width_out: int | None = None) -> None:
        """Refuse activations of another width than it reads (or, `width_out`, than it predicts)."""
        if width != self.cfg.d_in:
            raise EditkitError(
                f"d_in mismatch: the SAE reads {self.cfg.d_in}-wide activations "
                f"(hook {self.cfg.hook_name or '?'}), got {width}; use an SAE trained on this model and hook"
            )
        if width_out is not None and width_out != self.cfg.width_out:
            raise EditkitError(
                f"d_out mismatch: the transcoder predicts {self.cfg.width_out}-wide activations "
                f"(hook {self.cfg.hook_name_out or '?'}), got {width_out}; use one trained on this model and hooks"
            )

    def check_not_transcoder(self, what: str) -> None:
        """Refuse a transcoder where `what` writes the reconstruction back at the hook it reads."""
        if self.cfg.is_transcoder:
            raise EditkitError(
                f"{what} needs an SAE (it writes back where it reads); this is a transcoder "
                f"({self.cfg.hook_name} → {self.cfg.hook_name_out}): use editkit features edit or sae eval with it"
            )

    def check_feature(self, feature: int) -> int:
        if not 0 <= feature < self.cfg.d_sae:
            raise EditkitError(
                f"feature {feature} out of range: the SAE has {self.cfg.d_sae} features (0..{self.cfg.d_sae - 1})"
            )
        return feature

    def bos(self, tokenizer) -> int | None:
        """The BOS id to put first on every text it reads (None unless `prepend_bos`); a tokenizer without
        one is an error naming the SAE."""
        kind = "transcoder" if self.cfg.is_transcoder else "SAE"
        what = f"the {kind} {self.source or self.cfg.hook_name} was trained with a BOS first (prepend_bos true)"
        fix = "use it with the model it was trained on, or set prepend_bos false in its cfg.json if it had none"
        return bos_to_prepend(tokenizer, self.cfg.prepend_bos, what, fix)

    def direction(self, feature: int) -> torch.Tensor:
        """Unit-norm decoder direction of `feature` `[d_in]`."""
        d = self.W_dec[self.check_feature(feature)].detach()
        return d / d.norm()

    # --- files ---------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write `cfg.json` + `sae_weights.safetensors` (SAELens format, inference form) atomically."""
        from safetensors.torch import save_file

        sae = self.for_inference()
        tensors = {k: getattr(sae, k).detach().cpu().contiguous() for k in sae.tensors}
        with atomic_directory(path, replace_if=CFG) as tmp:
            save_file(tensors, str(tmp / WEIGHTS))
            (tmp / CFG).write_text(json.dumps(sae.cfg.to_saelens(), indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> SAE:
        """Load an SAE directory written by editkit or SAELens (safetensors only, never pickle)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CFG).exists() or not (path / WEIGHTS).exists():
            raise EditkitError(
                f"{path} is not an SAE directory (needs {CFG} and {WEIGHTS}); pass `editkit sae train --out`"
            )
        raw = read_json(path / CFG, "SAE config", f"rewrite it or train the SAE again (editkit sae train --out {path})")
        if not isinstance(raw, dict):
            raise EditkitError(f"SAE config {path / CFG} is not a JSON object of SAELens fields")
        cfg = SAEConfig.from_saelens(raw, where=str(path / CFG))
        arch = architecture_class(cfg.architecture)
        try:
            tensors = load_file(str(path / WEIGHTS))
        except SafetensorError as e:
            raise EditkitError(
                f"SAE weights {path / WEIGHTS} are truncated or damaged ({e}); copy them again or retrain the SAE"
            ) from None
        shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, cfg.width_out), "b_dec": (cfg.width_out,)}
        shapes = {name: shapes.get(name, (cfg.d_sae,)) for name in arch.tensors}
        unknown = sorted(set(tensors) - set(shapes))
        if unknown:
            raise EditkitError(
                f"{path / WEIGHTS} has tensors {', '.join(unknown)} that a {arch.saelens_architecture} SAE does not "
                f"have ({', '.join(shapes)}); refusing rather than dropping them"
            )
        for name, shape in shapes.items():
            if name not in tensors:
                have = ", ".join(shapes)
                raise EditkitError(
                    f"{path / WEIGHTS} has no tensor {name!r}; a {arch.saelens_architecture} SAE has {have}"
                )
            if tuple(tensors[name].shape) != shape:
                raise EditkitError(
                    f"{path / WEIGHTS}: {name} has shape {list(tensors[name].shape)}, cfg.json implies {list(shape)}"
                )
        cfg.dtype = str(tensors["W_enc"].dtype).removeprefix("torch.")
        sae = arch(cfg)
        sae.load_state_dict(tensors)
        sae.source = str(path)
        return sae.to(device).eval()
