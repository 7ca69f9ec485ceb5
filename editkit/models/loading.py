"""Loading models: `AutoModelForCausalLM.from_pretrained` with clear errors, GGUF files dequantised into plain
models, and the `toy` and named-model shortcuts."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from torch import nn

from editkit.errors import EditkitError
from editkit.models.adapters import Adapter, adapter_for, check_supported
from editkit.tensors import dtype_of
from editkit.toy import toy_path

#: A model directory holds at least one of these (the tokenizer's vocabulary).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


class ModelBundle(NamedTuple):
    """What `load_model` returns; unpacks as `model, tokenizer, adapter = load_model(...)`."""

    model: nn.Module
    tokenizer: object
    adapter: Adapter


def resolve_model_path(name_or_path: str) -> str:
    """`toy` -> the shipped toy model directory; a named model (`editkit models list`) -> its fetched
    directory; an existing directory -> itself, or the one .gguf file it holds if it has no config.json; a
    .gguf file -> itself; anything that can only be a path (starts with '.', '/' or '~', or has more than
    one '/') but does not exist -> a clear error; else a hub id, returned as given."""
    from editkit.models.named import KNOWN_MODELS, fetched_dir

    if (toy_model := toy_path(name_or_path, "model")) is not None:
        return str(toy_model)
    if name_or_path in KNOWN_MODELS:
        return str(fetched_dir(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path)
    if path.is_dir():
        if (path / "config.json").exists():
            return str(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(ggufs[0])
        if ggufs:
            raise EditkitError(
                f"{name_or_path} holds {len(ggufs)} .gguf files ({', '.join(g.name for g in ggufs)}); pass one"
            )
        raise EditkitError(f"{name_or_path} has no config.json; pass a Hugging Face model directory or a .gguf file")
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or path.exists():
        raise EditkitError(f"model directory {name_or_path} does not exist; pass a model directory or a hub id")
    return name_or_path


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_model(
    name_or_path: str,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    device_map: str | dict | None = None,
) -> ModelBundle:
    """Load a causal LM, its tokenizer and its architecture adapter.

    `name_or_path` is a local directory, a .gguf file (or a directory holding one), a named model, a hub
    id (where the hub is reachable) or `toy`. A GGUF file is dequantised to `dtype` (default float32) into
    a plain model that saves like any other. `device_map` passes through to transformers (multi-GPU
    sharding with accelerate); otherwise the model goes to `device` ('auto': CUDA, then MPS, then CPU).
    The architecture is checked before weights are read.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source = resolve_model_path(name_or_path)
    if isinstance(dtype, str):
        dtype = dtype_of(dtype)
    gguf = {}
    if source.endswith(".gguf"):
        require_gguf()
        gguf = {"gguf_file": Path(source).name}
        source, dtype = str(Path(source).parent), dtype or torch.float32
    try:
        config = AutoConfig.from_pretrained(source, **gguf)
    except (OSError, ValueError) as e:
        raise EditkitError(
            f"could not load model {name_or_path!r} ({str(e).splitlines()[0]}); "
            "pass a local model directory, or check the hub id and your network"
        ) from e
    check_supported(getattr(config, "model_type", ""), (config.architectures or [type(config).__name__])[0])
    if not gguf and Path(source).is_dir() and not any((Path(source) / f).exists() for f in TOKENIZER_FILES):
        raise EditkitError(
            f"{name_or_path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); copy the tokenizer of the "
            "model it came from into it (tokenizer.save_pretrained)"
        )
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(source, config=config, **kwargs, **gguf)
    except (OSError, ValueError, SafetensorError) as e:
        raise EditkitError(
            f"could not read the weights of model {name_or_path!r} ({str(e).splitlines()[0]}); they are missing, "
            "truncated or damaged: copy or download them again"
        ) from None
    if gguf:
        model = dequantised(model)
    if device_map is None:
        model.to(resolve_device(device))
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(source, **gguf)
    context = getattr(model.config, "max_position_embeddings", None)
    if isinstance(context, int) and tokenizer.model_max_length > context:
        tokenizer.model_max_length = context  # tokens.encode refuses longer texts (instead of an IndexError)
    return ModelBundle(model, tokenizer, adapter_for(model))


def require_gguf() -> None:
    """A clear error naming the extra when the packages for reading GGUF files are missing."""
    try:
        import accelerate  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as e:
        raise EditkitError(
            f"loading a .gguf file needs the gguf and accelerate packages ({e.name} is missing); "
            'install them with: pip install "editkit[gguf]"'
        ) from None


def dequantised(model: nn.Module) -> nn.Module:
    """A plain copy of a model that transformers loaded from GGUF: transformers 5 refuses to save a model
    carrying a GGUF `quantization_config`, so rebuild it from its config without one and copy the weights
    (tied embeddings stay tied)."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    del config.quantization_config
    dtype = next(model.parameters()).dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict(model.state_dict())
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain


def describe_model(name_or_path: str, device: str = "cpu") -> dict:
    """What `editkit info` shows: the model's class, family, size, dtype and the module names its adapter found
    (block modules with `{}` for the layer)."""
    from editkit.models.adapters import BLOCK_KINDS

    m, tok, a = load_model(name_or_path, device=device)
    return {
        "model": name_or_path,
        "class": type(m).__name__,
        "family": a.family,
        "layers": a.n_layers,
        "hidden_size": a.hidden_size,
        "vocab_size": len(tok),
        "parameters": sum(p.numel() for p in m.parameters()),
        "dtype": str(next(m.parameters()).dtype).removeprefix("torch."),
        "modules": {
            "embed": a.embed,
            **{k: a.name(k, 0).replace(".0", ".{}", 1) for k in BLOCK_KINDS},
            "final_norm": a.final_norm,
            "unembed": a.unembed,
        },
    }
