"""Sparse autoencoders (Bricken et al. 2023, "Towards Monosemanticity"; Gao et al. 2024 for TopK) in the
SAELens on-disk format: `cfg.json` + `sae_weights.safetensors` holding `W_enc [d_in, d_sae]`,
`b_enc [d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]`.

    f = act((x − b_dec) W_enc + b_enc)        act = ReLU (`relu`), or ReLU of the k largest (`topk`)
    x̂ = f W_dec + b_dec

`cfg.json` is written with the keys of SAELens ≥ 6 (`metadata` holds model and hook) and, flat beside
them, the keys older SAELens versions read (`hook_name`, `activation_fn_kwargs`, …), so either loads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from editkit.errors import EditkitError
from editkit.io import atomic_directory, read_json

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
ARCHITECTURES = ("relu", "topk")
NORMALISATIONS = ("none", "expected_average_only_in")
_SAELENS_ARCH = {"relu": "standard", "topk": "topk"}
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class SAEConfig:
    """Shape, architecture, where it reads (model, hook) and how it was (or will be) trained."""

    d_in: int
    d_sae: int
    architecture: str = "relu"
    k: int | None = None
    hook_name: str = ""
    model_name: str = ""
    dtype: str = "float32"
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    # training
    lr: float = 4e-4
    lr_warm_up_steps: int = 100
    lr_decay_steps: int = 0
    l1_coefficient: float = 5.0
    l1_warm_up_steps: int = 500
    batch_size: int = 2048
    training_steps: int = 2000
    dead_feature_window: int = 500
    resample_every: int = 500
    resample_until: float = 0.6
    seed: int = 0
    context_size: int = 128
    dataset_path: str = ""

    def __post_init__(self) -> None:
        self.architecture = {"standard": "relu"}.get(self.architecture, self.architecture)
        if self.architecture not in ARCHITECTURES:
            raise EditkitError(f"unknown SAE architecture {self.architecture!r}; use one of {', '.join(ARCHITECTURES)}")
        if self.d_in <= 0 or self.d_sae <= 0:
            raise EditkitError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.architecture == "topk" and not (self.k and 0 < self.k <= self.d_sae):
            raise EditkitError(f"a topk SAE needs 0 < k <= d_sae ({self.d_sae}), got k={self.k}; pass --k 32")
        if self.normalize_activations not in NORMALISATIONS:
            raise EditkitError(
                f"normalize_activations {self.normalize_activations!r} is not supported; "
                f"use {' or '.join(NORMALISATIONS)}"
            )
        if self.dtype not in _DTYPES:
            raise EditkitError(f"unknown SAE dtype {self.dtype!r}; use one of {', '.join(_DTYPES)}")

    @property
    def layer(self) -> int | None:
        parts = self.hook_name.split(".")
        return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None

    def to_saelens(self) -> dict:
        """cfg.json: SAELens ≥ 6 keys, pre-6 keys beside them, and editkit's training settings."""
        meta = {
            "model_name": self.model_name,
            "hook_name": self.hook_name,
            "hook_layer": self.layer,
            "hook_head_index": None,
            "context_size": self.context_size,
            "prepend_bos": True,
            "dataset_path": self.dataset_path,
            "sae_lens_version": "6.0.0",
            "sae_lens_training_version": "6.0.0",
        }
        cfg = {
            **asdict(self),
            "architecture": _SAELENS_ARCH[self.architecture],
            "device": "cpu",
            "reshape_activations": "none",
            "metadata": meta,
            **{k: v for k, v in meta.items() if k not in ("sae_lens_version", "sae_lens_training_version")},
            "activation_fn_str": self.architecture,
            "activation_fn_kwargs": {"k": self.k} if self.architecture == "topk" else {},
            "finetuning_scaling_factor": False,
            "dataset_trust_remote_code": False,
            "model_from_pretrained_kwargs": {},
            "sae_lens_version": "6.0.0",
            "editkit": True,
        }
        if self.architecture == "topk":
            cfg["rescale_acts_by_decoder_norm"] = False
        else:
            cfg.pop("k")
        return cfg

    @classmethod
    def from_saelens(cls, raw: dict, where: str = CFG) -> SAEConfig:
        """Read a cfg.json of any SAELens version (flat keys, or `metadata`/`meta` with model and hook)."""
        meta = raw.get("metadata") or raw.get("meta") or {}
        arch = raw.get("architecture", "standard")
        act = raw.get("activation_fn_str") or raw.get("activation_fn") or "relu"
        kwargs = raw.get("activation_fn_kwargs") or {}
        if arch == "topk" or act == "topk":
            arch, k = "topk", raw.get("k") or kwargs.get("k")
        elif arch == "standard" and act == "relu":
            arch, k = "relu", None
        else:
            raise EditkitError(
                f"{where}: SAE architecture {arch!r} ({act}) is not supported; editkit reads relu and topk"
            )
        if arch == "topk" and raw.get("rescale_acts_by_decoder_norm"):
            raise EditkitError(f"{where}: rescale_acts_by_decoder_norm is not supported; fold the decoder norm first")
        if "d_in" not in raw or "d_sae" not in raw:
            raise EditkitError(f"{where}: missing d_in or d_sae; an SAELens cfg.json has both")
        names = {f.name for f in fields(cls)}
        known = {k2: v for k2, v in raw.items() if k2 in names and k2 not in ("architecture", "k")}
        known["hook_name"] = raw.get("hook_name") or raw.get("hook_point") or meta.get("hook_name") or ""
        known["model_name"] = raw.get("model_name") or meta.get("model_name") or ""
        norm = known.get("normalize_activations")
        known["normalize_activations"] = "none" if norm in (None, False) else norm
        known["context_size"] = known.get("context_size") or meta.get("context_size") or 128
        known["dataset_path"] = known.get("dataset_path") or meta.get("dataset_path") or ""
        known["dtype"] = str(known.get("dtype", "float32")).removeprefix("torch.")
        return cls(architecture=arch, k=k, **known)


class SAE(nn.Module):
    """One sparse autoencoder: `encode`, `decode`, `forward` (= decode ∘ encode), SAELens-format files."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        dtype = _DTYPES[cfg.dtype]
        g = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.empty(cfg.d_sae, cfg.d_in, dtype=torch.float32)
        bound = (6 / cfg.d_in) ** 0.5  # kaiming uniform
        w_dec.uniform_(-bound, bound, generator=g)
        w_dec = 0.1 * w_dec / w_dec.norm(dim=1, keepdim=True)  # April 2024 update: small decoder norms, W_enc = W_decᵀ
        self.W_dec = nn.Parameter(w_dec.to(dtype))
        self.W_enc = nn.Parameter(w_dec.T.clone().contiguous().to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations `(x − b_dec) W_enc + b_enc`."""
        x = x.to(self.W_enc.dtype)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """ReLU, or for `topk` the ReLU of the k largest pre-activations and zero elsewhere."""
        if self.cfg.architecture == "relu":
            return torch.relu(pre)
        values, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations `[..., d_sae]` of activations `[..., d_in]`."""
        self.check_width(x.shape[-1])
        return self.activation(self.pre_acts(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction `f W_dec + b_dec`."""
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def check_width(self, width: int) -> None:
        if width != self.cfg.d_in:
            raise EditkitError(
                f"d_in mismatch: the SAE reads {self.cfg.d_in}-wide activations "
                f"(hook {self.cfg.hook_name or '?'}), got {width}; use an SAE trained on this model and hook"
            )

    def check_feature(self, feature: int) -> int:
        if not 0 <= feature < self.cfg.d_sae:
            raise EditkitError(
                f"feature {feature} out of range: the SAE has {self.cfg.d_sae} features (0..{self.cfg.d_sae - 1})"
            )
        return feature

    def direction(self, feature: int) -> torch.Tensor:
        """Unit-norm decoder direction of `feature` `[d_in]`."""
        d = self.W_dec[self.check_feature(feature)].detach()
        return d / d.norm()

    # --- files ---------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write `cfg.json` + `sae_weights.safetensors` (SAELens format) atomically."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_directory(path, replace_if=CFG) as tmp:
            save_file(tensors, str(tmp / WEIGHTS))
            (tmp / CFG).write_text(json.dumps(self.cfg.to_saelens(), indent=2) + "\n")
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
        try:
            tensors = load_file(str(path / WEIGHTS))
        except SafetensorError as e:
            raise EditkitError(
                f"SAE weights {path / WEIGHTS} are truncated or damaged ({e}); copy them again or retrain the SAE"
            ) from None
        shapes = {
            "W_enc": (cfg.d_in, cfg.d_sae),
            "b_enc": (cfg.d_sae,),
            "W_dec": (cfg.d_sae, cfg.d_in),
            "b_dec": (cfg.d_in,),
        }
        for name, shape in shapes.items():
            if name not in tensors:
                raise EditkitError(f"{path / WEIGHTS} has no tensor {name!r}; an SAELens SAE has {', '.join(shapes)}")
            if tuple(tensors[name].shape) != shape:
                raise EditkitError(
                    f"{path / WEIGHTS}: {name} has shape {list(tensors[name].shape)}, cfg.json implies {list(shape)}"
                )
        cfg.dtype = str(tensors["W_enc"].dtype).removeprefix("torch.")
        sae = cls(cfg)
        sae.load_state_dict({k: tensors[k] for k in shapes})
        return sae.to(device).eval()
