"""Helpers shared by the feature tests: one torch thread (shared cores), a synthetic sparse dataset with a
known dictionary, and the shipped toy SAEs."""

from __future__ import annotations

import torch

from editkit.models import toy_dir

torch.set_num_threads(1)

TOY_HOOK = "blocks.3.hook_resid_post"
EDIT_HOOK = "blocks.0.hook_resid_post"  # where the toy prompts read the subject's last token


def toy_sae_dir(hook: str = TOY_HOOK):
    return toy_dir() / f"sae-{hook}"


def sparse_data(n_feat: int = 48, d: int = 24, n: int = 20000, p: float = 0.06, seed: int = 0):
    """(x [n, d], D [n_feat, d]): each x a sparse non-negative combination of unit dictionary rows."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(n_feat, d, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    codes = (torch.rand(n, n_feat, generator=g) < p) * torch.rand(n, n_feat, generator=g) * 2
    return codes @ dictionary, dictionary


def random_batches(x: torch.Tensor, batch_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    while True:
        yield x[torch.randint(len(x), (batch_size,), generator=g)]
