"""UltraEdit (Gu et al. 2025, "UltraEdit: Training-, Subject-, and Memory-Free Lifelong Editing in LLMs"): one
closed-form update per batch from each edited module's keys and loss gradients, with lifelong normalisation.

At every position that predicts a target token (the prompt's last token and the target's tokens but the last),
for each module of `layers`: the key k (the module's input) and the gradient g of the target's cross-entropy
with respect to the module's output, all from one forward and backward pass of the model as the batch finds it.
z = [k ‖ g] is normalised by running statistics over every edit so far (the lifelong normalisation: mean and
standard deviation per coordinate, updated with this batch first), ẑ = (z − μ) / (σ + ε) = [k̂ ‖ ĝ]; the pseudo
value is V = −lr ‖k̂‖² ĝ, and the update the ridge solution ΔWᵀ = (KᵀK + I)⁻¹ KᵀV with the raw keys K.

As the authors' code: the gradient is the mean over a forward pass of `forward_batch` requests; one set of
statistics per weight shape, shared by the modules of that shape. Unlike it, a batch's variance enters the running
sum of squares as its exact sum of squared deviations (the code adds n·var with the unbiased var, which is
undefined for one row). The statistics live in the EditResult chain (`Delta.state`: count, mean, sum of squares),
so a sequence continues from its history and nothing is kept elsewhere. No second-moment statistics C are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from editkit.edit.hparams import EditHParams, bounded
from editkit.edit.methods.ft import nll_batch
from editkit.edit.registry import Method, register
from editkit.edit.result import Delta, EditResult, weight
from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.requests import EditRequest
from editkit.tensors import frozen

#: ε of the normalisation (the authors' code: float32's machine epsilon).
EPS = torch.finfo(torch.float32).eps


@dataclass
class UltraEditHParams(EditHParams):
    """UltraEdit: step size lr of the pseudo values, requests per forward/backward pass (sets the gradient's scale)."""

    lr: float = bounded(1e-6, gt=0)
    forward_batch: int = bounded(10, ge=1)


def keys_and_grads(model, tokenizer, modules: list[str], requests: list[EditRequest], hp) -> dict[str, tuple]:
    """Per module: the keys `[rows, in]` and the output gradients `[rows, out]` (float64) at every position that
    predicts a target token, `forward_batch` requests per pass."""
    device = next(model.parameters()).device
    got: dict[str, list] = {m: [] for m in modules}
    for start in range(0, len(requests), hp.forward_batch):
        ids, mask, labels = nll_batch(tokenizer, requests[start : start + hp.forward_batch], device)
        zero: dict[str, torch.Tensor] = {}

        def hold(out: torch.Tensor, name: str, zero=zero) -> torch.Tensor:
            zero[name] = torch.zeros_like(out, requires_grad=True)
            return out + zero[name]

        with frozen(model), Trace(model, modules, retain_input=True, retain_output=False, edit_output=hold) as tr:
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
            grads = torch.autograd.grad(loss, [zero[m] for m in modules])
        at = labels[:, 1:] != -100  # position t predicts token t + 1
        for m, g in zip(modules, grads, strict=True):
            got[m].append((tr[m].input[:, :-1][at].double(), g[:, :-1][at].double()))
    return {m: (torch.cat([k for k, _ in v]), torch.cat([g for _, g in v])) for m, v in got.items()}


def merge(state: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
    """Running (count, mean, sum of squared deviations) per coordinate, `[3, dim]`, with the rows of `z` added
    (Chan et al.'s pairwise update; `state` None: nothing seen yet)."""
    n, mean_b = z.shape[0], z.mean(0)
    m2_b = ((z - mean_b) ** 2).sum(0)
    if state is None:
        return torch.stack([torch.full_like(mean_b, n), mean_b, m2_b])
    N, mean, m2 = state[0, 0], state[1], state[2]
    total, d = N + n, mean_b - mean
    return torch.stack([torch.full_like(mean, total), mean + d * n / total, m2 + m2_b + d**2 * N * n / total])


def normalise(z: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """(z − μ) / (σ + ε), σ² = sum of squares / (count − 1 + ε), as the authors' RunningMeanStd."""
    std = (state[2] / (state[0] - 1 + EPS)).sqrt()
    return (z - state[1]) / (std + EPS)


def ultraedit_update(K: torch.Tensor, G: torch.Tensor, state: torch.Tensor, lr: float) -> torch.Tensor:
    """ΔW `[out, in]` from keys `[rows, in]`, gradients `[rows, out]` and the statistics to normalise them with."""
    z_hat = normalise(torch.cat([K, G], 1), state)
    k_hat, g_hat = z_hat[:, : K.shape[1]], z_hat[:, K.shape[1] :]
    V = -lr * (k_hat * k_hat).sum(1, keepdim=True) * g_hat
    A = K.T @ K + torch.eye(K.shape[1], dtype=K.dtype, device=K.device)
    return torch.linalg.solve(A, K.T @ V).T


def latest_state(result: EditResult, shape: torch.Size) -> torch.Tensor | None:
    """The statistics the chain's last UltraEdit update of a `shape` weight left, or None."""
    return next((d.state for d in reversed(result.deltas) if d.state is not None and d.dense.shape == shape), None)


def apply_ultraedit(
    model, tokenizer, adapter, requests: list[EditRequest], hp: UltraEditHParams, stats, result: EditResult
) -> EditResult:
    """One update per module of `layers` for the whole batch, all computed on the model as the batch finds it."""
    modules = [adapter.name("mlp_out", adapter.layer(i)) for i in hp.layers]
    found = keys_and_grads(model, tokenizer, modules, requests, hp)
    shapes = {m: weight(model, m).shape for m in modules}
    states = {}
    for shape in dict.fromkeys(shapes.values()):
        z = torch.cat([torch.cat(found[m], 1) for m in modules if shapes[m] == shape])
        prior = latest_state(result, shape)
        states[shape] = merge(None if prior is None else prior.to(z.device, z.dtype), z)
        if states[shape][0, 0] < 2:
            raise EditkitError(
                "UltraEdit normalises each batch by statistics over the edits so far, and one position alone "
                "normalises to zero (no edit); edit at least two requests in the first batch (--batch-size 2 or more)"
            )
    deltas = []
    for m in modules:
        K, G = found[m]
        dW = ultraedit_update(K, G, states[shapes[m]], hp.lr)
        deltas.append(Delta(m, dense=dW.float(), keys=K.float(), state=states[shapes[m]].clone()))
    for d in deltas:
        result.push(model, d)
    result.requests.extend(requests)
    return result.seal(model)


register(
    Method(
        "ultraedit",
        apply_ultraedit,
        UltraEditHParams,
        "UltraEdit: one closed-form update per batch, lifelong-normalised (Gu et al. 2025)",
    )
)
