"""The target value of the locate-then-edit methods (ROME's v*, MEMIT's z): Adam on a residual δ added to one
module's output at the subject's last token, for many requests in one batch.

Each request's δ touches only its own rows and the requests' losses are summed, not averaged, so Adam (which
works per coordinate) moves every δ as it would alone; a request that stops (its loss below 5e-2 as in the
papers' code, or the optional target-probability and plateau stops of the hparams) is frozen and its rows
leave the batch. What does not depend on δ is computed once: the blocks below the edited module run once per
batch (their outputs and the arguments the model passes each block are recorded), and the unembedding runs only
at the positions the loss reads. `cached=False` runs the whole model every step instead (the reference path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from editkit.edit.common import fill, subject_last
from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.models.adapters import get_module
from editkit.models.cache import cache_kwarg, layer_kv, new_cache
from editkit.requests import EditRequest
from editkit.tensors import frozen
from editkit.tokens import encode, pad_id, pad_rows, target_ids

#: A request stops once its loss is below this (ROME's and MEMIT's code).
CONVERGED = 5e-2
#: Why a request's optimisation stopped.
STOPS = ("loss", "prob", "plateau", "steps")
#: Rows × width of one batch: bounds the activations the backward pass keeps.
BATCH_TOKENS = 4096


@dataclass
class Target:
    """v* = init + delta at the module's output, the subject's last token of the bare prompt; the NLL of the
    target when the optimisation stopped, the Adam steps it took and why it stopped (one of STOPS)."""

    init: torch.Tensor
    delta: torch.Tensor
    nll: float
    steps: int
    stop: str = "steps"

    @property
    def value(self) -> torch.Tensor:
        return self.init + self.delta


@dataclass
class _Rows:
    """One request's rows: the prefixed prompts followed by the target's tokens, then '{subject} is a' for the
    KL term; where δ goes in each row; the (row, position, token) triples of the target's NLL."""

    ids: list[list[int]]
    look: list[int]
    nll: list[tuple[int, int, int]]

    def longest_suffix(self) -> int:
        """Tokens from δ's position on in the longest row (what the cached path runs each step)."""
        return max(len(r) - x for r, x in zip(self.ids, self.look, strict=True))


def request_rows(tokenizer, request: EditRequest, prefixes: list[str]) -> _Rows:
    """The rows of one request (the bare prompt '{}' first: v*'s init is read there; the KL row last)."""
    new = target_ids(tokenizer, request.text, request.target_new)
    ids, look, nll = [], [], []
    for p in prefixes:
        text = fill(p, request)
        row = encode(tokenizer, text)
        nll += [(len(ids), len(row) - 1 + j, t) for j, t in enumerate(new)]
        look.append(subject_last(tokenizer, text, request.subject))
        ids.append(row + new[:-1])
    kl_text = f"{request.subject} is a"
    look.append(subject_last(tokenizer, kl_text, request.subject))
    ids.append(encode(tokenizer, kl_text))
    return _Rows(ids, look, nll)


class _Batch:
    """The active requests' rows in one right-padded batch of fixed width, with the indices the loss needs."""

    def __init__(self, parts: list[_Rows], active: list[int], starts: list[int]):
        rows = [r for i in active for r in range(starts[i], starts[i] + len(parts[i].ids))]
        self.rows = torch.tensor(rows)  # rows of the full batch
        self.owner = torch.tensor([j for j, i in enumerate(active) for _ in parts[i].ids])
        self.look = torch.tensor([x for i in active for x in parts[i].look])
        offsets = torch.tensor([0] + [len(parts[i].ids) for i in active]).cumsum(0)
        triples = [(int(offsets[j]) + r, p, t, j) for j, i in enumerate(active) for r, p, t in parts[i].nll]
        self.nll_row, self.nll_pos, self.nll_tok, self.nll_owner = (torch.tensor(x) for x in zip(*triples, strict=True))
        self.nll_count = torch.bincount(self.nll_owner, minlength=len(active)).float()
        self.kl_row = offsets[1:] - 1
        self.kl_pos = self.look[self.kl_row]

    def reads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, position) of every logit the loss reads: the NLL's, then each request's KL position."""
        return torch.cat([self.nll_row, self.kl_row]), torch.cat([self.nll_pos, self.kl_pos])


def _wide(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32, or float64 if it is float64 (a float64 model optimises its targets in float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _take(x, rows: torch.Tensor, n: int, cache=None):
    """A recorded block argument restricted to `rows` of a batch of `n`: tensors of two or more dimensions whose
    leading one is the batch (hidden states, masks, positions) are indexed, a KV cache is replaced by `cache`,
    the rest is kept."""
    from transformers.cache_utils import Cache

    if isinstance(x, Cache):
        return cache
    if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[0] == n:
        return x[rows.to(x.device)]
    if isinstance(x, tuple):
        return tuple(_take(v, rows, n, cache) for v in x)
    return x


class _Forward:
    """Logits at the positions the loss reads, as a function of the δ of each row, over all or some rows.

    cached: nothing before a row's δ position (attention is causal) and nothing below the first block that
    depends on δ changes with δ. So the model runs once without δ, keeping the keys and values of every row's
    tokens before its δ position, the hidden states entering that first block, and (from a run of the model on
    the later tokens over that cache) the arguments it passes each block from there on. Each step then runs only
    those blocks, on each row's tokens from its δ position on, and the final norm and unembedding only at the
    read positions. Otherwise each step runs the whole model on the whole rows (the reference path)."""

    def __init__(self, model, adapter, module: str, ids: torch.Tensor, mask: torch.Tensor, look, cached: bool):
        self.model, self.adapter, self.module, self.ids, self.mask = model, adapter, module, ids, mask
        self.cached = cached
        names = adapter.names("block")
        first = next(i for i, b in enumerate(names) if module == b or module.startswith(b + "."))
        # δ on a block's output: that block is δ-free too, and δ is added to what enters the next one
        self.on_block = module == names[first]
        self.start = first + 1 if self.on_block else first
        self.blocks = [get_module(model, b) for b in names[self.start :]]
        self.n, device = ids.shape[0], ids.device
        if not cached:
            with torch.no_grad(), Trace(model, module, stop=True) as out:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            self.output = out[module].output  # the module's output without δ, [R, T, h]
            self.unedited = self.output[torch.arange(self.n, device=device), look]
            return
        # each row's tokens from its δ position on, at slots [P, P + S), behind its earlier tokens' keys and values
        # right-aligned in P cached slots (so slot distances are token distances, as sliding windows need)
        lengths = mask.sum(1)
        P, S = int(look.max()), int((lengths - look).max())
        at = torch.arange(S, device=device)
        self.positions = (look[:, None] + at).clamp(max=ids.shape[1] - 1)  # [R, S]
        rows = torch.arange(self.n, device=device)[:, None]
        cache = new_cache()
        entry = names[self.start] if self.blocks else adapter.final_norm
        with (
            torch.no_grad(),
            Trace(model, module) as out,
            Trace(model, entry, retain_input=True, retain_output=False) as inp,
            Trace(model, names[-1], retain_output=False, stop=True),
        ):
            model(input_ids=ids, attention_mask=mask, use_cache=True, **{cache_kwarg(model): cache})
        self.output = out[module].output[rows, self.positions]
        self.h = inp[entry].input[rows, self.positions] if self.blocks else None
        self.unedited = self.output[:, 0]  # the module's output at each row's δ position
        source = torch.arange(P, device=device) - (P - look[:, None])  # the token each cached slot holds, [R, P]
        index = source.clamp(min=0)[:, None, :, None]
        self.kv = {
            i: tuple(x.gather(2, index.expand(-1, x.shape[1], -1, x.shape[3])) for x in layer_kv(cache, i))
            for i in range(len(names))
        }
        suffix_mask = torch.cat([source >= 0, at < (lengths - look)[:, None]], 1)
        self.calls = []
        if self.blocks:
            with (
                torch.no_grad(),
                Trace(model, names[self.start :], retain_args=True, retain_output=False, stop=True) as tr,
            ):
                model(
                    input_ids=ids[rows, self.positions],
                    attention_mask=suffix_mask.long(),
                    position_ids=self.positions,
                    use_cache=True,
                    **{cache_kwarg(model): new_cache(self.kv)},
                )
            self.calls = [(tr[b].args, tr[b].kwargs) for b in names[self.start :]]

    def logits(self, D: torch.Tensor, batch: _Batch) -> torch.Tensor:
        """`[reads, vocab]` logits (float32 or wider) of `batch`'s rows, row r with δ `D[owner[r]]` at `look[r]`."""
        device = self.ids.device
        rows, (read_row, read_pos) = batch.rows.to(device), (x.to(device) for x in batch.reads())
        at, owner = torch.arange(len(rows), device=device), batch.owner.to(device)
        # in the cached path each row starts at its δ position
        look = torch.zeros_like(at) if self.cached else batch.look.to(device)

        def add(out: torch.Tensor, name: str = "") -> torch.Tensor:
            out = out.clone()
            out[at, look] += D[owner].to(out.dtype)
            return out

        if not self.cached:
            with Trace(self.model, self.module, retain_output=False, edit_output=add):
                logits = self.model(input_ids=self.ids[rows], attention_mask=self.mask[rows]).logits
            return _wide(logits)[read_row, read_pos]
        read_pos = read_pos - batch.look.to(device)[read_row]
        h = add(self.output[rows]) if self.on_block else self.h[rows]
        cache = new_cache({i: (k[rows], v[rows]) for i, (k, v) in self.kv.items() if i >= self.start})
        with Trace(self.model, self.module, retain_output=False, edit_output=None if self.on_block else add):
            for block, (args, kwargs) in zip(self.blocks, self.calls, strict=True):
                kwargs = {k: _take(v, rows, self.n, cache) for k, v in kwargs.items()}
                if args:
                    out = block(h, *_take(args[1:], rows, self.n, cache), **kwargs)
                else:  # called with keywords only: the first one is the hidden state
                    out = block(**{**kwargs, next(iter(kwargs)): h})
                h = out[0] if isinstance(out, tuple) else out
        return _wide(self.adapter.logits(self.model, h[read_row, read_pos]))


def optimise_targets(
    model, tokenizer, adapter, module: str, requests: list[EditRequest], prefixes: list[str], hp, cached: bool = True
) -> list[Target]:
    """v* / z for each request: Adam on δ added to `module`'s output at the subject's last token, minimising the
    target's NLL over the prefixed prompts + kl_factor·KL on '{subject} is a' + weight decay, with ‖δ‖ clamped
    to clamp_norm_factor·‖init‖. Requests are batched up to BATCH_TOKENS tokens, those with similar numbers of
    tokens from δ on together (a step runs every row padded to its batch's longest); each result is the one the
    request would get alone, in the order of `requests`."""
    parts = [request_rows(tokenizer, r, prefixes) for r in requests]
    order = sorted(range(len(parts)), key=lambda i: parts[i].longest_suffix())
    chunks, rows, width = [[]], 0, 0
    for i in order:
        p = parts[i]
        rows, width = rows + len(p.ids), max(width, *map(len, p.ids))
        if chunks[-1] and rows * width > BATCH_TOKENS:
            chunks.append([])
            rows, width = len(p.ids), max(map(len, p.ids))
        chunks[-1].append(i)
    out: list[Target | None] = [None] * len(parts)
    for c in chunks:
        got = _optimise(model, tokenizer, adapter, module, [requests[i] for i in c], [parts[i] for i in c], hp, cached)
        for i, t in zip(c, got, strict=True):
            out[i] = t
    return out


def _stop(losses: list[float], nll: float, hp, last: bool) -> str | None:
    """Why a request with these losses so far (the latest last) and this NLL stops now, or None: its loss is
    below CONVERGED, its target's probability reached v_stop_prob, its loss has plateaued, or the steps ran out."""
    if losses[-1] < CONVERGED:
        return "loss"
    if hp.v_stop_prob is not None and math.exp(-nll) >= hp.v_stop_prob:
        return "prob"
    w = hp.v_plateau_steps
    if w and len(losses) > w and min(losses[-w:]) > (1 - hp.v_plateau_tol) * min(losses[:-w]):
        return "plateau"
    return "steps" if last else None


def _optimise(model, tokenizer, adapter, module, requests, parts: list[_Rows], hp, cached: bool) -> list[Target]:
    device = next(model.parameters()).device
    ids, mask = pad_rows([r for p in parts for r in p.ids], pad_id(tokenizer))
    starts = torch.tensor([0] + [len(p.ids) for p in parts]).cumsum(0).tolist()
    look = torch.tensor([x for p in parts for x in p.look], device=device)
    forward = _Forward(model, adapter, module, ids.to(device), mask.to(device), look, cached)
    inits = _wide(forward.unedited[starts[:-1]].detach())  # at each request's bare prompt (its first row)
    for r, x in zip(requests, inits, strict=True):
        if not torch.isfinite(x).all():
            raise EditkitError(
                f"the output of {module} at {r.subject!r} is not finite (NaN or Inf); check the model's weights"
            )
    deltas = [torch.zeros_like(x, requires_grad=True) for x in inits]
    opt = torch.optim.Adam(deltas, lr=hp.v_lr)
    init_norm = inits.norm(dim=-1)
    max_norm = hp.clamp_norm_factor * init_norm
    results: list[Target | None] = [None] * len(parts)
    active, batch, kl_init = list(range(len(parts))), None, None
    history: list[list[float]] = [[] for _ in parts]  # each request's loss at each step
    with frozen(model):
        for step in range(hp.v_num_grad_steps):
            if batch is None:
                batch = _Batch(parts, active, starts)
            D = torch.stack([deltas[i] for i in active])
            logp = torch.log_softmax(forward.logits(D, batch), -1)
            n_nll = len(batch.nll_row)
            terms = -logp[torch.arange(n_nll, device=device), batch.nll_tok.to(device)]
            nll = terms.new_zeros(len(active)).index_add(0, batch.nll_owner.to(device), terms)
            nll = nll / batch.nll_count.to(device, nll.dtype)
            kl_logp = logp[n_nll:]
            if kl_init is None:  # step 0 has δ = 0: the unedited model's distribution
                kl_init = kl_logp.detach()
            idx = torch.tensor(active, device=device)
            kl = F.kl_div(kl_init[idx], kl_logp, log_target=True, reduction="none").sum(-1)  # KL(now ‖ init)
            loss = nll + hp.kl_factor * kl + hp.v_weight_decay * D.norm(dim=-1) / init_norm[idx] ** 2
            values, nlls = loss.detach().tolist(), nll.detach().tolist()
            done = []
            for j, i in enumerate(active):
                history[i].append(values[j])
                why = _stop(history[i], nlls[j], hp, last=step == hp.v_num_grad_steps - 1)
                if why:
                    done.append(j)
                    results[i] = Target(inits[i], deltas[i].detach(), nlls[j], step, why)
            keep = [j for j in range(len(active)) if j not in done]
            if not keep:
                break
            opt.zero_grad()
            loss[keep].sum().backward()
            for j in done:
                deltas[active[j]].grad = None
            opt.step()
            active = [active[j] for j in keep]
            with torch.no_grad():
                for i in active:
                    if deltas[i].norm() > max_norm[i]:
                        deltas[i].mul_(max_norm[i] / deltas[i].norm())
            if done:
                batch = None
    for r, t in zip(requests, results, strict=True):
        if not torch.isfinite(t.delta).all():
            raise EditkitError(f"optimising the target for {r.subject!r} diverged; lower v_lr (e.g. --set v_lr=0.1)")
    return results
