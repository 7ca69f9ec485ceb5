"""Features: sparse autoencoders (SAELens on-disk format), activation stores, feature attribution and
inspection, steering, feature-level weight edits, and linear probes."""

from editkit.features.hookpoints import HookPoint, resolve_hook
from editkit.features.sae import SAE, SAEConfig

__all__ = ["SAE", "HookPoint", "SAEConfig", "resolve_hook"]
