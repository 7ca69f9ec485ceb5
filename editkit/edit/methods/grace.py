"""GRACE (Hartvigsen et al. 2023, "Aging with GRACE"): a codebook of (key k, value v, deferral radius ε) at the
output of one module. Wherever the module's input at a position lies within ε of its nearest key, the
module's output there is replaced by that key's value; elsewhere the model runs unchanged. The base weights
are never written.

Each request adds to the codebook (paper §3): its key is the module's input at the prompt's last token; with
no key within ε_init + ε_j it gets a new entry (radius ε_init); near a key with the same target that key's
radius grows to reach it ("coverage") and its value is trained on; near a key with another target both radii
become half their distance ("split"). The value (cold: uniform in [0, 1), or warm: the current output) is
trained by Adam to make the target likely with it in place at the key's position. Every request journals
what it changed, so the codebook rolls back one request at a time bit for bit (`EditResult.rollback`).

The query is every position's input (a causal model's input at the prompt's last token is the same whether
or not the target follows), so scoring and generation need not know where a prompt ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editkit.edit import memory as side
from editkit.edit.hparams import EditHParams, bounded
from editkit.edit.memory import Memory
from editkit.edit.methods.ft import nll_batch
from editkit.edit.registry import Method, register
from editkit.edit.result import EditResult
from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.requests import EditRequest
from editkit.tensors import frozen

KIND = "grace"


@dataclass
class GRACEHParams(EditHParams):
    """GRACE at the output of `module` (an adapter kind: mlp_out, mlp_in, ...) of `layers[0]`."""

    module: str = "mlp_out"
    edit_lr: float = bounded(1.0, gt=0)
    n_iter: int = bounded(100, ge=1)
    eps: float = bounded(1.0, gt=0)
    #: "cold" (uniform in [0, 1), the paper's default) or "warm" (the module's current output there)
    val_init: str = "cold"
    #: training stops early once the target's mean NLL is below this
    stop_loss: float = bounded(1e-2, ge=0)


def distances(x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of every row of `x` [..., d] to every key [n, d], in float64: [..., n]."""
    x = x.double()
    k = keys.double()
    d2 = x.pow(2).sum(-1, keepdim=True) - 2 * x @ k.T + k.pow(2).sum(-1)
    return d2.clamp_min(0).sqrt()


def read(memory: Memory, x: torch.Tensor, out: torch.Tensor, _call: side.Call) -> torch.Tensor:
    """The module's output with each position inside some key's radius replaced by that key's value (each
    position on its own, so the call does not matter)."""
    keys = memory.tensors["keys"]
    if keys.shape[0] == 0:
        return out
    dist, nearest = distances(x, keys).min(-1)
    hit = dist <= memory.tensors["radii"].double()[nearest]
    if not bool(hit.any()):
        return out
    return torch.where(hit[..., None], memory.tensors["values"][nearest].to(out.dtype), out)


def undo(memory: Memory) -> None:
    """Take the last request back: the entries it added, the radius and value it changed."""
    t = memory.tensors
    n, index = int(t["undo_n"][-1]), int(t["undo_index"][-1])
    keys, values, radii = t["keys"][:n].clone(), t["values"][:n].clone(), t["radii"][:n].clone()
    if index >= 0:
        radii[index], values[index] = t["undo_radius"][-1], t["undo_value"][-1]
    t.update(keys=keys, values=values, radii=radii)
    for k in ("undo_n", "undo_index", "undo_radius", "undo_value"):
        t[k] = t[k][:-1].clone()
    memory.meta["labels"] = memory.meta["labels"][:n]


side.READERS[KIND] = read
side.UNDO[KIND] = undo


def empty_codebook(module: str, d_in: int, d_out: int, device) -> Memory:
    f = dict(dtype=torch.float32, device=device)
    return Memory(
        module,
        KIND,
        {
            "keys": torch.zeros(0, d_in, **f),
            "values": torch.zeros(0, d_out, **f),
            "radii": torch.zeros(0, **f),
            "undo_n": torch.zeros(0, dtype=torch.int64, device=device),
            "undo_index": torch.zeros(0, dtype=torch.int64, device=device),
            "undo_radius": torch.zeros(0, **f),
            "undo_value": torch.zeros(0, d_out, **f),
        },
        {"labels": []},
    )


def apply_grace(
    model, tokenizer, adapter, requests: list[EditRequest], hp: GRACEHParams, stats, result: EditResult
) -> EditResult:
    """Add each request to the codebook at `module` of `layers[0]` in turn (made and attached on the first)."""
    if len(hp.layers) != 1:
        raise EditkitError(f"GRACE keeps its codebook at one layer; give one, e.g. layers=[{hp.layers[0]}]")
    module = adapter.name(hp.module, hp.layers[0])
    codebook = next((m for m in result.memories if m.module == module), None)
    for request in requests:
        key, current, ids, mask, labels, q = query(model, tokenizer, module, request)
        if codebook is None:
            codebook = empty_codebook(module, key.shape[-1], current.shape[-1], key.device)
            result.add_memory(model, codebook)
        add(model, codebook, request, hp, key, current, (ids, mask, labels, q), len(result.requests))
        result.requests.append(request)
    return result.seal(model)


@torch.no_grad()
def query(model, tokenizer, module: str, request: EditRequest):
    """The module's input and output at the prompt's last token, and the prompt + target batch."""
    ids, mask, labels = nll_batch(tokenizer, [request], next(model.parameters()).device)
    q = int((labels[0] == -100).sum()) - 1
    with Trace(model, module, retain_input=True, stop=True) as tr:
        model(input_ids=ids, attention_mask=mask)
    return tr[module].input[0, q].float(), tr[module].output[0, q].float(), ids, mask, labels, q


def add(model, codebook: Memory, request: EditRequest, hp: GRACEHParams, key, current, batch, step: int) -> None:
    """One request into the codebook: choose add / coverage / split, train the value, then commit and journal."""
    t, labels = codebook.tensors, codebook.meta["labels"]
    n = t["keys"].shape[0]
    index, new_radius, old_radius = -1, hp.eps, 0.0
    if n:
        dist, j = distances(key, t["keys"]).min(-1)
        dist, j = float(dist), int(j)
        if dist <= hp.eps + float(t["radii"][j]):
            index, old_radius = j, float(t["radii"][j])
            if labels[j] != request.target_new:  # split: both radii become half the distance
                new_radius = dist / 2
    if index >= 0 and labels[index] == request.target_new:  # coverage: grow and retrain the nearest entry
        start = t["values"][index]
    elif hp.val_init == "warm":
        start = current
    elif hp.val_init == "cold":
        start = torch.rand(current.shape, generator=torch.Generator().manual_seed(hp.seed + step)).to(current)
    else:
        raise EditkitError(f"val_init={hp.val_init!r} is not a GRACE value init; use cold or warm")
    value = train_value(model, codebook.module, start, batch, hp)
    old_value = t["values"][index].clone() if index >= 0 else torch.zeros_like(value)
    radii, values = t["radii"].clone(), t["values"].clone()
    if index >= 0 and labels[index] == request.target_new:
        radii[index] = max(old_radius, dist)
        values[index] = value
    else:
        if index >= 0:
            radii[index] = new_radius
        t["keys"] = torch.cat([t["keys"], key[None]])
        values = torch.cat([values, value[None]])
        radii = torch.cat([radii, radii.new_tensor([new_radius])])
        labels.append(request.target_new)
    t.update(
        values=values,
        radii=radii,
        undo_n=torch.cat([t["undo_n"], t["undo_n"].new_tensor([n])]),
        undo_index=torch.cat([t["undo_index"], t["undo_index"].new_tensor([index])]),
        undo_radius=torch.cat([t["undo_radius"], t["undo_radius"].new_tensor([old_radius])]),
        undo_value=torch.cat([t["undo_value"], old_value[None]]),
    )


def train_value(model, module: str, start: torch.Tensor, batch, hp: GRACEHParams) -> torch.Tensor:
    """Adam on the value put at the key's position of `module`'s output until the target is likely."""
    ids, mask, labels, q = batch
    value = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([value], lr=hp.edit_lr)

    def put(x, out, name):
        out = out.clone()
        out[:, q] = value.to(out.dtype)
        return out

    with frozen(model), Trace(model, module, retain_output=False, edit_io=put):
        for _ in range(hp.n_iter):
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
            if loss.item() < hp.stop_loss:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    value = value.detach()
    if not torch.isfinite(value).all():
        raise EditkitError(f"GRACE trained a non-finite value at {module}; no edit was applied. Try a lower edit_lr")
    return value


register(
    Method(
        "grace",
        apply_grace,
        GRACEHParams,
        "GRACE: a codebook of keys, values and deferral radii beside one layer (Hartvigsen et al. 2023)",
        changes="memory",
    )
)
