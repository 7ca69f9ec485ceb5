"""WISE (Wang et al. 2024, "WISE: Rethinking the knowledge memory for lifelong model editing"): edits go into side
memories, copies W' of one MLP output projection W, never into W itself; a router sends each input sequence to
the side memory whose activation score, from Δ(x) = ‖a(x)(W' − W)ᵀ‖ at its positions (a the projection's
input), is above its threshold, and to the main memory W otherwise.

Per edit (paper §3.2) the current side memory is trained by SGD on the target's NLL plus the routing margins
    max(0, Δ_irr − α) + max(0, β − Δ_edit) + max(0, γ − (Δ_edit − Δ_irr)),
its gradient masked to a random share `mask_ratio` of W's entries (knowledge sharding: each shard of
`save_freq` edits gets its own mask and a fresh copy of W), each entry kept within ±norm_constraint of W.
A memory's threshold is act_ratio × the smallest mean Δ_edit of its edits. Every `merge_freq` edits the
shards are TIES-merged (Yadav et al. 2023: trim to the top `density`, elect signs, average the agreeing
entries) into the one merged side memory, with weight 0.6 on the one merged before (EasyEdit's WISE).

Routing (EasyEdit's WISEAdapter.forward): a sequence's score for a memory is the mean Δ over its positions
(their largest Δ when it has more than LONG, EasyEdit's rule for long inputs), and the whole sequence reads
the memory with the highest score above its threshold (WISE-Retrieve's rule), or W when none is. EasyEdit
averages over every position of each forward pass, padding and a teacher-forced target included, and on a
cached generation step over that step's one new token, so its scoring and its generation route the same
prompt differently. editkit's rule is the closest one that a KV cache keeps consistent: a sequence's route is
decided on its first, uncached forward pass from its prompt tokens only (never padding; under
`memory.prompt_positions`, which teacher-forced scoring sets, not the target's positions either) and kept,
looked up by that sequence's KV cache, for every cached step after it. Scoring prompt + target teacher-forced
and generating greedily from the prompt thus route alike and agree token for token.

Training reads the side memory where the router will: W' replaces W at every position of the edit's rows
(prefix + prompt + target; the router sends the whole sequence), Δ_edit is each row's sequence score over
its prefix and prompt (what the router computes for it), and the threshold is act_ratio × the smallest, over
a memory's edits, mean of Δ_edit over the rows (EasyEdit: the mean over an edit's rows of their mean Δ).
Δ_irr is the sequence score of each row's text before the subject, a model-sampled prefix (ROME's context
prefixes) and the template's words before the subject: a causal model scores that text alike on its own, so
it stands for an unrelated sequence (EasyEdit uses a dataset's locality prompt, which a plain request lacks).
Δ is the paper's ‖a(W' − W)ᵀ‖ (EasyEdit's code compares the two outputs after the model's activation
function). Shards not merged yet are routed to like the merged memory. Memories are stored as W' − W.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

import torch

from editkit.edit import memory as side
from editkit.edit.common import context_prefixes, fill
from editkit.edit.hparams import EditHParams, bounded
from editkit.edit.memory import Memory
from editkit.edit.registry import Method, register
from editkit.edit.result import EditResult
from editkit.errors import EditkitError
from editkit.hooks import FromBlock, Trace
from editkit.models.adapters import get_module, weight_out_in
from editkit.requests import EditRequest
from editkit.tensors import frozen
from editkit.tokens import encode, pad_id, pad_rows, subject_span, target_ids

KIND = "wise"


@dataclass
class WISEHParams(EditHParams):
    """WISE at `module` (an adapter kind, mlp_out by default) of `layers[0]`; EasyEdit's names."""

    module: str = "mlp_out"
    edit_lr: float = bounded(1.0, gt=0)
    n_iter: int = bounded(70, ge=1)
    weight_decay: float = bounded(1e-5, ge=0)
    norm_constraint: float = bounded(1.0, gt=0)
    mask_ratio: float = bounded(0.2, gt=0, le=1)
    #: [alpha, beta, gamma]: irrelevant inputs below alpha, edits above beta, apart by gamma
    act_margin: list[float] = bounded([5.0, 20.0, 10.0], ge=0)
    act_ratio: float = bounded(0.88, gt=0)
    save_freq: int = bounded(500, ge=1)
    merge_freq: int = bounded(1000, ge=1)
    density: float = bounded(0.53, gt=0, le=1)
    merge_weight: float = bounded(1.0, gt=0)
    #: training stops once the whole loss is below this
    stop_loss: float = bounded(1e-2, ge=0)
    context_templates: list[list[int]] = bounded([[5, 5]], ge=1)


#: a sequence with more prompt tokens than this is scored by its largest Δ, not the mean (EasyEdit)
LONG = 100

#: KV cache -> {module: each sequence's route}, as decided on the sequence's first forward pass
_ROUTES: WeakKeyDictionary = WeakKeyDictionary()


def sequence_scores(scores: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Each sequence's score from its positions' Δ [..., batch, seq]: the mean over `positions` ([batch, seq]
    bool; None: all), their largest Δ when there are more than LONG, 0 with none."""
    if positions is None:
        positions = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device)
    kept = scores.masked_fill(~positions, 0)
    n = positions.sum(-1)
    return torch.where(n > LONG, kept.amax(-1), kept.sum(-1) / n.clamp_min(1))


def route(scores: torch.Tensor, thresholds: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Each sequence's memory from the positions' Δ [memories, batch, seq]: the index of the highest sequence
    score above its memory's threshold, -1 (the main memory W) when none is."""
    s = sequence_scores(scores, positions)
    above = s > thresholds[:, None]
    best = torch.where(above, s, torch.full_like(s, -1.0)).argmax(0)
    return torch.where(above.any(0), best, torch.full_like(best, -1))


def read(memory: Memory, x: torch.Tensor, out: torch.Tensor, call: side.Call) -> torch.Tensor:
    """Each sequence's output from the side memory its route names (decided on its first forward pass, kept
    for the cached steps after it), else from W."""
    routes = [m for m in memory.meta["memories"] if m["threshold"] is not None]  # not the shard being trained
    if not routes:
        return out
    deltas = torch.stack([x.float() @ memory.tensors[m["name"]].T for m in routes])  # [m, batch, seq, out]
    if call.past == 0:
        thresholds = torch.tensor([m["threshold"] for m in routes], dtype=deltas.dtype, device=deltas.device)
        chosen = route(deltas.norm(dim=-1), thresholds, call.query(x.shape[1]))
        if call.cache is not None:
            _ROUTES.setdefault(call.cache, {})[memory.module] = chosen
    else:
        chosen = _ROUTES.get(call.cache, {}).get(memory.module)
        if chosen is None or chosen.shape[0] != x.shape[0]:
            raise EditkitError(
                f"WISE at {memory.module} routes a sequence on its first forward pass; this cached step continues "
                "a KV cache that pass was not given. Pass the cache from the first call on (generate does)"
            )
    on = chosen >= 0
    if not bool(on.any()):
        return out
    delta = deltas[chosen.clamp_min(0), torch.arange(x.shape[0], device=x.device)]
    return torch.where(on[:, None, None], out + delta.to(out.dtype), out)


side.READERS[KIND] = read


def ties_merge(taus: list[torch.Tensor], weights: list[float], density: float) -> torch.Tensor:
    """TIES-merging of task vectors: keep each one's top `density` entries by magnitude, elect each entry's
    sign by the weighted sum, and average (by weight) the entries that agree with it."""
    kept = []
    for tau in taus:
        flat = tau.flatten()
        k = max(1, int(round(density * flat.numel())))
        order = torch.sort(flat.abs(), descending=True, stable=True).indices[:k]
        trimmed = torch.zeros_like(flat)
        trimmed[order] = flat[order]
        kept.append(trimmed.view_as(tau))
    w = torch.tensor(weights, dtype=taus[0].dtype, device=taus[0].device).view(-1, *[1] * taus[0].dim())
    stacked = torch.stack(kept) * w
    agree = (torch.sign(stacked) == torch.sign(stacked.sum(0))) & (stacked != 0)
    divisor = (w * agree).sum(0)
    return (stacked * agree).sum(0) / torch.where(divisor == 0, torch.ones_like(divisor), divisor)


def check(hp: WISEHParams) -> None:
    if hp.merge_freq % hp.save_freq:
        raise EditkitError(f"merge_freq={hp.merge_freq} must be a multiple of save_freq={hp.save_freq} (shards merge)")
    if len(hp.act_margin) != 3:
        raise EditkitError(f"act_margin={hp.act_margin} should be [alpha, beta, gamma], e.g. [5.0, 20.0, 10.0]")
    if len(hp.layers) != 1:
        raise EditkitError(f"WISE keeps its side memory at one layer; give one, e.g. layers=[{hp.layers[0]}]")


def apply_wise(
    model, tokenizer, adapter, requests: list[EditRequest], hp: WISEHParams, stats, result: EditResult
) -> EditResult:
    """Edit each request into the current shard in turn; shards start, and merge, as the counts say."""
    check(hp)
    module = adapter.name(hp.module, hp.layers[0])
    memory = next((m for m in result.memories if m.module == module), None)
    new = memory is None
    if new:
        memory = Memory(module, KIND, {}, {"memories": [], "edits": 0, "shards": 0, "merges": 0})
    prefixes = context_prefixes(model, tokenizer, hp.context_templates, hp.seed)
    for request in requests:
        edit_one(model, tokenizer, adapter, memory, request, hp, prefixes)
        result.requests.append(request)
    if new:
        result.add_memory(model, memory)
    return result.seal(model)


def edit_one(
    model, tokenizer, adapter, memory: Memory, request: EditRequest, hp: WISEHParams, prefixes: list[str]
) -> None:
    """Train the current shard on one request (starting a new shard first, merging after, as due)."""
    t, meta = memory.tensors, memory.meta
    W = weight_out_in(get_module(model, memory.module)).detach().float()
    if meta["edits"] % hp.save_freq == 0:  # a new shard: a fresh copy of W and its own gradient mask
        name = f"shard.{meta['shards']}"
        g = torch.Generator().manual_seed(hp.seed + meta["shards"])
        t["mask"] = (torch.rand(W.shape, generator=g) < hp.mask_ratio).to(W.device)
        t[name] = torch.zeros_like(W)
        meta["shards"] += 1
        meta["memories"].append({"name": name, "threshold": None, "min_act": None})
    route = meta["memories"][-1]
    tau, act = train_shard(model, tokenizer, adapter, t[route["name"]], t["mask"], request, hp, prefixes)
    t[route["name"]] = tau
    route["min_act"] = act if route["min_act"] is None else min(route["min_act"], act)
    route["threshold"] = hp.act_ratio * route["min_act"]
    meta["edits"] += 1
    if meta["edits"] % hp.merge_freq == 0:
        merge(memory, hp)


def merge(memory: Memory, hp: WISEHParams) -> None:
    """TIES-merge the shards (and the merged memory before, at weight 0.6) into one merged side memory."""
    t, meta = memory.tensors, memory.meta
    shards = [m for m in meta["memories"] if m["name"] != "merged"]
    old = next((m for m in meta["memories"] if m["name"] == "merged"), None)
    taus = [t[m["name"]] for m in shards]
    weights = [hp.merge_weight / len(shards)] * len(shards)
    if old is not None:
        taus, weights = taus + [t["merged"]], [0.4 / len(shards)] * len(shards) + [0.6]
    t["merged"] = ties_merge(taus, weights, hp.density)
    min_act = min(m["min_act"] for m in shards + ([old] if old else []))
    for m in shards:
        del t[m["name"]]
    del t["mask"]
    meta["memories"] = [{"name": "merged", "threshold": hp.act_ratio * min_act, "min_act": min_act}]
    meta["merges"] += 1


def rows(tokenizer, request: EditRequest, prefixes: list[str], device):
    """prefix + prompt + target per prefix: ids, mask, target labels, and the positions that make a row's
    sequence score as the edit (prefix and prompt) and as irrelevant text (before the subject)."""
    seqs, labels, heads, starts = [], [], [], []
    for p in prefixes:
        text = fill(p, request)
        head, new = encode(tokenizer, text), target_ids(tokenizer, text, request.target_new)
        seqs.append(head + new)
        labels.append([-100] * len(head) + new)
        heads.append(len(head))
        starts.append(subject_span(tokenizer, text, request.subject)[0])
    ids, mask = pad_rows(seqs, pad_id(tokenizer))
    lab, _ = pad_rows(labels, -100)
    pos = torch.arange(ids.shape[1])
    edit = pos[None] < torch.tensor(heads)[:, None]
    irrelevant = pos[None] < torch.tensor(starts)[:, None]
    return ids.to(device), mask.to(device), lab.to(device), edit.to(device), irrelevant.to(device)


def train_shard(model, tokenizer, adapter, tau0, mask, request: EditRequest, hp: WISEHParams, prefixes):
    """SGD on the shard's W' − W (masked, clamped) for one request; returns it and the rows' mean Δ_edit.
    The blocks below the side memory's never change their output, so each step runs from its block up."""
    device = next(model.parameters()).device
    module = adapter.name(hp.module, hp.layers[0])
    ids, attn, labels, edit, irrelevant = rows(tokenizer, request, prefixes, device)
    suffix = FromBlock(model, adapter, hp.layers[0], input_ids=ids, attention_mask=attn)
    unrelated = irrelevant.any(-1)
    W = weight_out_in(get_module(model, module)).detach().float()
    tau = tau0.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([tau], lr=hp.edit_lr)
    alpha, beta, gamma = hp.act_margin
    layer = get_module(model, module)
    seen: list[torch.Tensor] = []

    def side_memory(x, out, name):  # W' in place of W at every position (other memories are not read)
        delta = x.float() @ tau.T
        seen[:] = [delta]
        return layer.forward(x) + delta.to(out.dtype)

    with frozen(model), Trace(model, module, retain_output=False, edit_io=side_memory):
        for _ in range(hp.n_iter):
            logits = suffix.logits().float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
            scores = seen[0].norm(dim=-1)
            d_edit = sequence_scores(scores, edit)
            d_irr = sequence_scores(scores[unrelated], irrelevant[unrelated])
            loss = nll + _positive_mean(beta - d_edit)
            if d_irr.numel():
                loss = loss + _positive_mean(d_irr - alpha) + _positive_mean(gamma - (d_edit[:, None] - d_irr[None]))
            if loss.item() < hp.stop_loss:
                break
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                tau.grad.add_(hp.weight_decay * (W + tau)).mul_(mask)
            opt.step()
            with torch.no_grad():
                tau.clamp_(-hp.norm_constraint, hp.norm_constraint)
        with torch.no_grad():
            suffix.logits()
            act = float(sequence_scores(seen[0].norm(dim=-1), edit).mean())
    tau = tau.detach()
    if not torch.isfinite(tau).all():
        raise EditkitError(
            f"WISE trained a non-finite side memory at {module}; no edit was applied. Try a lower edit_lr"
        )
    return tau, act


def _positive_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of the positive entries (0 when none), as WISE's margin losses average their violations."""
    pos = x[x > 0]
    return pos.mean() if pos.numel() else x.new_zeros(())


register(
    Method(
        "wise",
        apply_wise,
        WISEHParams,
        "WISE: a routed side memory beside one MLP output projection, sharded and TIES-merged (Wang et al. 2024)",
        changes="memory",
    )
)
