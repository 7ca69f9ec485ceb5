"""Fine-tuning baselines (ROME paper §4): Adam on the MLP output weights of `layers` to make the target likely
after the bare prompt. FT-L keeps every weight within ±norm_constraint of its original value (L∞ ball)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editkit.edit.hparams import EditHParams, bounded
from editkit.edit.registry import Method, register
from editkit.edit.result import Delta, EditResult, weight
from editkit.requests import EditRequest
from editkit.tensors import frozen
from editkit.tokens import encode, pad_id, pad_rows, target_ids


@dataclass
class FTHParams(EditHParams):
    """Fine-tuning the MLP output weights of `layers` on the requests; FT-L clamps the change to ±norm_constraint."""

    num_steps: int = bounded(25, ge=1)
    lr: float = bounded(5e-4, gt=0)
    norm_constraint: float | None = bounded(None, gt=0)


def nll_batch(tokenizer, requests: list[EditRequest], device):
    """Token ids of prompt + target, with labels only on the target tokens (-100 elsewhere)."""
    rows, labels = [], []
    for r in requests:
        head, new = encode(tokenizer, r.text), target_ids(tokenizer, r.text, r.target_new)
        rows.append(head + new)
        labels.append([-100] * len(head) + new)
    ids, mask = pad_rows(rows, pad_id(tokenizer))
    lab, _ = pad_rows(labels, -100)
    return ids.to(device), mask.to(device), lab.to(device)


def apply_ft(
    model, tokenizer, adapter, requests: list[EditRequest], hp: FTHParams, stats, result: EditResult
) -> EditResult:
    """Fine-tune on all requests together; the change is recorded as one dense delta per touched module."""
    device = next(model.parameters()).device
    modules = [adapter.name("mlp_out", i) for i in hp.layers]
    params = [weight(model, m) for m in modules]
    before = [w.detach().clone() for w in params]
    ids, mask, labels = nll_batch(tokenizer, requests, device)
    torch.manual_seed(hp.seed)
    with frozen(model):
        leaves = [get_leaf(model, m) for m in modules]
        for leaf in leaves:
            leaf.requires_grad_(True)
        opt = torch.optim.Adam(leaves, lr=hp.lr)
        for _ in range(hp.num_steps):
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
            if loss.item() < 1e-2:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            if hp.norm_constraint is not None:
                with torch.no_grad():
                    for w, w0 in zip(params, before, strict=True):
                        w.copy_(torch.clamp(w, w0 - hp.norm_constraint, w0 + hp.norm_constraint))
    with torch.no_grad():
        deltas = [(w.float() - w0.float()) for w, w0 in zip(params, before, strict=True)]
        for w, w0 in zip(params, before, strict=True):
            w.copy_(w0)
    for m, d in zip(modules, deltas, strict=True):
        result.push(model, Delta(m, dense=d))
    result.requests.extend(requests)
    return result.seal(model)


def get_leaf(model, module: str) -> torch.nn.Parameter:
    """The Parameter behind `module`'s weight (what an optimiser steps; `weight` may be a transposed view)."""
    from editkit.models.adapters import get_module

    return get_module(model, module).weight


FT = register(Method("ft", apply_ft, FTHParams, "fine-tuning of the MLP output weights (ROME paper's FT baseline)"))
#: the ROME paper's FT-L constant (L∞ 5e-4) preset; the shipped files give it per model
register(FT.variant("ft-l", "FT with each weight kept within ±norm_constraint (FT-L)", norm_constraint=5e-4))
