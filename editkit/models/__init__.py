"""Models: loading (`load_model`), architecture adapters, and next-token prediction."""

from editkit.io import data_dir
from editkit.models.adapters import BLOCK_KINDS, FAMILIES, Adapter, adapter_for, get_module, weight_out_in
from editkit.models.loading import ModelBundle, load_model
from editkit.models.predict import Prediction, next_token_probs, top_k
from editkit.toy import toy_dir

__all__ = [
    "BLOCK_KINDS",
    "FAMILIES",
    "Adapter",
    "ModelBundle",
    "Prediction",
    "adapter_for",
    "data_dir",
    "get_module",
    "load_model",
    "next_token_probs",
    "top_k",
    "toy_dir",
    "weight_out_in",
]
