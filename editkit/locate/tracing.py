"""Causal tracing (Meng et al. 2022, ROME §2): where does the model recall a fact?

Run the clean prompt; corrupt the subject's token embeddings with Gaussian noise; then restore one
state (a block's output `hidden`, or a window of `mlp` / `attn` outputs) from the clean run at one
token and see how much of the answer's probability comes back.

Three methods, one result:
- `naive`: the reference algorithm, one forward pass of [clean, noised × samples] per (token, layer).
- `fast`: the same numbers. The corrupted run is computed once; for each restored layer the blocks
  below it are not re-run, and every token's restoration runs in one batch through the blocks above.
- `attribution`: attribution patching, (clean − corrupted) · ∂p/∂state from one forward and one
  backward pass: a linear estimate of every restoration at once.

Noise is drawn as the reference code draws it: `RandomState(seed).randn(samples, subject_len, hidden)`,
the same draw for every restoration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.models import Adapter, get_module
from editkit.models.cache import cache_kwarg, layer_kv, new_cache
from editkit.requests import fill_prompt
from editkit.tokens import encode, subject_span, target_ids

KINDS = ("hidden", "mlp", "attn")
METHODS = ("fast", "naive", "attribution")
_MODULE = {"hidden": "block", "mlp": "mlp", "attn": "attn"}


@dataclass
class TraceResult:
    """Scores `[tokens × layers]` per kind: the answer's probability with that state restored."""

    tokens: list[str]
    subject_range: tuple[int, int]
    answer: str
    answer_id: int
    clean_score: float
    corrupted_score: float
    noise: float
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    window: int = 10
    method: str = "fast"
    samples: int = 10
    seed: int = 1
    sever: str | None = None

    def peak(self, kind: str) -> tuple[int, int, float]:
        """(token, layer, score) of the highest restored score for `kind`."""
        s = self.scores[kind]
        t, layer = np.unravel_index(int(np.argmax(s)), s.shape)
        return int(t), int(layer), float(s[t, layer])

    def to_json(self) -> dict:
        return {
            "tokens": self.tokens,
            "subject_range": list(self.subject_range),
            "answer": self.answer,
            "clean_score": self.clean_score,
            "corrupted_score": self.corrupted_score,
            "noise": self.noise,
            "window": self.window,
            "scores": {k: v.tolist() for k, v in self.scores.items()},
        }

    def save(self, path) -> None:
        """Write an `.npz` (no pickled objects), atomically."""
        import io

        from editkit.io import atomic_write_bytes

        meta = {k: np.asarray(v) for k, v in self.__dict__.items() if k not in ("scores", "sever")}
        meta["sever"] = np.asarray(self.sever or "")
        buf = io.BytesIO()
        np.savez(buf, **meta, **{f"scores_{k}": v for k, v in self.scores.items()})
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path) -> TraceResult:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        scores = {k.removeprefix("scores_"): d.pop(k) for k in list(d) if k.startswith("scores_")}
        return cls(
            tokens=[str(t) for t in d["tokens"]],
            subject_range=tuple(int(i) for i in d["subject_range"]),
            answer=str(d["answer"]),
            answer_id=int(d["answer_id"]),
            clean_score=float(d["clean_score"]),
            corrupted_score=float(d["corrupted_score"]),
            noise=float(d["noise"]),
            scores=scores,
            window=int(d["window"]),
            method=str(d["method"]),
            samples=int(d["samples"]),
            seed=int(d["seed"]),
            sever=str(d["sever"]) or None,
        )


# --- noise ---------------------------------------------------------------------------------------------


@torch.no_grad()
def embedding_std(model, tokenizer, adapter: Adapter, subjects: Sequence[str]) -> float:
    """Standard deviation of the token embeddings of `subjects` (each tokenized alone), as ROME measures it."""
    if not subjects:
        raise EditkitError("no subjects to measure the embedding scale on; pass a list of subject names")
    emb = get_module(model, adapter.embed)
    device = emb.weight.device
    ids = torch.tensor([i for s in subjects for i in encode(tokenizer, s)], device=device)
    return emb(ids).float().std().item()


def noise_scale(model, tokenizer, adapter: Adapter, noise: str | float, subjects: Sequence[str]) -> tuple[float, bool]:
    """(scale, uniform) from a noise spec: `s3` (3 × embedding std, default), `s<k>`, a float (absolute
    scale, as in the reference code), `uniform` (uniform in ±3 std) or `u<float>` (uniform, absolute)."""
    spec = str(noise).strip().lower()
    try:
        if spec == "uniform":
            return 3 * embedding_std(model, tokenizer, adapter, subjects), True
        if spec.startswith("s"):
            return float(spec[1:] or 1) * embedding_std(model, tokenizer, adapter, subjects), False
        if spec.startswith("u"):
            return float(spec[1:]), True
        value = float(spec)
    except ValueError:
        raise EditkitError(
            f"unknown noise {noise!r}; use s3 (3 × embedding std), a float, uniform, or u<float>"
        ) from None
    if not np.isfinite(value) or value < 0:
        raise EditkitError(f"noise must be a finite non-negative number, got {noise!r}")
    return value, False


def reference_subjects(known_file: str | Path | None = None) -> list[str]:
    """The default subjects whose embeddings set the `s3` noise scale: those of a known_1000-format file (default
    ROME's known_1000, shipped in data/), as the reference code uses. (The CLI passes the toy world's subjects,
    `toy.sources.noise_subjects`, for the toy model.)"""
    import json

    from editkit.io import data_dir

    return [r["subject"] for r in json.loads(Path(known_file or data_dir() / "known_1000.json").read_text())]


def draw_noise(samples: int, subject_len: int, hidden: int, scale: float, uniform: bool, seed: int) -> torch.Tensor:
    """`[samples, subject_len, hidden]` float64 noise, drawn exactly as the reference implementation draws it."""
    rs = np.random.RandomState(seed)
    base = rs.uniform(-1, 1, (samples, subject_len, hidden)) if uniform else rs.randn(samples, subject_len, hidden)
    return scale * torch.from_numpy(base)


# --- shared set-up ------------------------------------------------------------------------------------


@dataclass
class _Case:
    """One traced prompt: token ids, subject range, answer, noise, and the modules involved."""

    model: torch.nn.Module
    adapter: Adapter
    ids: torch.Tensor  # [1, T]
    span: tuple[int, int]
    answer_id: int
    noise: torch.Tensor  # [S, subject_len, hidden], float64

    @property
    def n_tokens(self) -> int:
        return self.ids.shape[1]

    @property
    def samples(self) -> int:
        return self.noise.shape[0]

    def corrupt(self, first_row: int):
        """An `edit_output` for the embedding: add the noise to the subject tokens of rows ≥ `first_row`."""
        b, e = self.span

        def add_noise(x: torch.Tensor, name: str) -> torch.Tensor:
            x = x.clone()
            x[first_row:, b:e] = (x[first_row:, b:e].double() + self.noise.to(x.device)).to(x.dtype)
            return x

        return add_noise

    def answer_prob(self, logits_last: torch.Tensor) -> torch.Tensor:
        """Probability of the answer from last-position logits `[rows, vocab]`."""
        return torch.softmax(logits_last.float(), dim=-1)[:, self.answer_id]

    def names(self, kind: str) -> list[str]:
        return self.adapter.names(_MODULE[kind])


def default_window(n_layers: int) -> int:
    """Layers restored together for mlp/attn: the paper's 10 on GPT-2 XL's 48 layers, scaled to the depth
    (a fifth of the layers, 1 to 10), so a window never covers the whole model."""
    return max(1, min(10, round(n_layers / 5)))


def window_layers(layer: int, n_layers: int, window: int) -> range:
    """The layers restored for a window centred on `layer`, as in the paper: [layer − w/2, layer + w/2)."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


# --- naive: the reference algorithm ---------------------------------------------------------------------


@torch.no_grad()
def _run_patched(case: _Case, restore: dict[str, list[int]], freeze: dict[str, list[int]] | None = None) -> float:
    """One forward of [clean, noised × S]: restore states `{module: [tokens]}` from row 0 in rows 1..S.

    `freeze` (severed paths): modules whose outputs at the given tokens keep their corrupted values,
    taken from a first pass without any restoration, as the reference's `trace_with_repatch` does.
    """
    rows = case.ids.expand(case.samples + 1, -1)
    embed = case.adapter.embed
    frozen = {}
    if freeze:
        with Trace(case.model, [embed, *freeze], edit_output=_only(embed, case.corrupt(1)), clone=True) as first:
            case.model(input_ids=rows, use_cache=False)
        frozen = {n: first[n].output for n in freeze}

    def patch(x: torch.Tensor, name: str) -> torch.Tensor:
        if name == embed:
            return case.corrupt(1)(x, name)
        x = x.clone()
        for t in restore.get(name, []):
            x[1:, t] = x[0, t]
        for t in (freeze or {}).get(name, []):
            x[1:, t] = frozen[name][1:, t]
        return x

    with Trace(case.model, [embed, *restore, *(freeze or {})], retain_output=False, edit_output=patch):
        logits = case.model(input_ids=rows, use_cache=False).logits
    return case.answer_prob(logits[1:, -1]).mean().item()


def _only(name: str, fn):
    return lambda x, n: fn(x, n) if n == name else x


def _naive(case: _Case, kind: str, window: int, sever: str | None) -> np.ndarray:
    n_layers, T = case.adapter.n_layers, case.n_tokens
    out = np.zeros((T, n_layers))
    for t in range(T):
        for layer in range(n_layers):
            if kind == "hidden":
                restore = {case.adapter.name("block", layer): [t]}
                freeze = {n: [t] for n in case.names(sever)} if sever else None
            else:
                restore = {case.adapter.name(kind, i): [t] for i in window_layers(layer, n_layers, window)}
                freeze = None
            out[t, layer] = _run_patched(case, restore, freeze)
    return out


# --- fast: corrupted prefix shared, below the restored layer and before the restored token ---------------


def _expand(x, rows: int, cache):
    """Broadcast a recorded batch-1 call argument to `rows` rows (tensors with a leading 1; recursively);
    a KV cache is replaced by `cache` (a fresh one per replay: blocks append to it)."""
    from transformers.cache_utils import Cache

    if isinstance(x, Cache):
        return cache
    if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == 1:
        return x.expand(rows, *x.shape[1:])
    if isinstance(x, tuple):
        return tuple(_expand(v, rows, cache) for v in x)
    return x


def _tile(x: torch.Tensor, n: int) -> torch.Tensor:
    """`[S, ...]` -> `[n*S, ...]`: the S samples once for each of n restorations."""
    return x.repeat(n, *([1] * (x.dim() - 1)))


class _Replay:
    """Re-runs the blocks on the tokens from `t` on, with the corrupted run's keys and values of the tokens
    before `t` as a KV cache, then the model's logits (`Adapter.logits`) at the last position.

    Restoring a state of token `t` at layer `l` changes nothing below `l` and nothing before `t` (attention
    is causal), so only that corner is recomputed. The arguments each block needs for the chunk (causal or
    sliding-window mask, rotary embeddings, positions) are the ones the model itself passes that block
    when run on it: they differ between layers where local and global attention alternate.
    """

    def __init__(self, case: _Case, kv: list[tuple[torch.Tensor, torch.Tensor]], full_calls: list[tuple[tuple, dict]]):
        self.case = case
        self.kv = kv  # per layer, the corrupted run's keys and values [S, heads, T, head_dim]
        self.blocks = list(get_module(case.model, case.adapter.blocks))
        self.calls = {0: full_calls}

    def cache(self, t: int, copies: Sequence[int]):
        """A fresh KV cache with the corrupted keys/values of tokens [0, t): layer i holds the S samples
        `copies[i]` times over (0: only the first sample, for a batch of one)."""
        if t == 0:
            return None
        cache = new_cache()
        for i, (k, v) in enumerate(self.kv):
            k, v = (k[:1], v[:1]) if copies[i] == 0 else (_tile(k, copies[i]), _tile(v, copies[i]))
            cache.update(k[:, :, :t], v[:, :, :t], i)
        return cache

    def calls_at(self, t: int) -> list[tuple[tuple, dict]]:
        """Each block's arguments for the chunk [t, T): recorded from the model's own pass over it (batch 1)."""
        if t not in self.calls:
            a, model = self.case.adapter, self.case.model
            zero = self.cache(t, [0] * a.n_layers)
            with torch.no_grad(), Trace(model, a.names("block"), retain_args=True, stop=True) as tr:
                model(input_ids=self.case.ids[:, t:], **{cache_kwarg(model): zero})
            self.calls[t] = [(tr[n].args, tr[n].kwargs) for n in a.names("block")]
        return self.calls[t]

    def run(self, t: int, inputs: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        """Answer probabilities `[sum of rows]` for several restorations of token `t` at once: each input is
        (start block, hidden state entering it for tokens [t, T)); rows join the batch at their start block,
        in the given order, which must be sorted by start."""
        n_layers = self.case.adapter.n_layers
        S = self.case.samples
        copies = [sum(1 for s, _ in inputs if s <= i) for i in range(n_layers)]
        cache = self.cache(t, copies)
        calls = self.calls_at(t)
        h = None
        pending = list(inputs)
        for j, block in enumerate(self.blocks):
            joining = [x for s, x in pending if s == j]
            pending = [(s, x) for s, x in pending if s != j]
            if joining:
                h = torch.cat(([h] if h is not None else []) + joining)
            if h is None:
                continue
            rows = h.shape[0]
            assert rows == copies[j] * S
            args, kwargs = calls[j]
            out = block(
                h,
                *(_expand(x, rows, cache) for x in args[1:]),
                **{k: _expand(v, rows, cache) for k, v in kwargs.items()},
            )
            h = out[0] if isinstance(out, tuple) else out
        last = [x[:, -1] for _, x in pending]  # restorations above the last block
        h_last = torch.cat(([h[:, -1]] if h is not None else []) + last)
        return self.case.answer_prob(self.case.adapter.logits(self.case.model, h_last))


@torch.no_grad()
def _fast_runs(case: _Case, kinds: Sequence[str], sever: str | None) -> tuple[dict, _Replay]:
    """The clean run (batch 1) and the corrupted run (batch S, with its KV cache and score), every state recorded."""
    a = case.adapter
    names = sorted({n for k in (*kinds, *([sever] if sever else [])) for n in case.names(k)} | set(a.names("block")))
    with Trace(case.model, names, clone=True) as clean, Trace(case.model, a.names("block"), retain_args=True) as calls:
        case.model(input_ids=case.ids, use_cache=False)
    rows = case.ids.expand(case.samples, -1)
    with Trace(case.model, [a.embed, *names], clone=True, edit_output=_only(a.embed, case.corrupt(0))) as corr:
        with Trace(case.model, a.names("block"), retain_input=True, retain_output=False) as corr_in:
            cache = new_cache()
            out = case.model(input_ids=rows, use_cache=True, **{cache_kwarg(case.model): cache})
    states = {"clean": {n: clean[n].output[0] for n in names}, "corrupted": {n: corr[n].output for n in names}}
    states["block_input"] = [corr_in[n].input for n in a.names("block")]
    states["corrupted_score"] = case.answer_prob(out.logits[:, -1]).mean().item()
    kv = [layer_kv(cache, i) for i in range(a.n_layers)]
    return states, _Replay(case, kv, [(calls[n].args, calls[n].kwargs) for n in a.names("block")])


def _restorations(case: _Case, kind: str, layer: int, t: int, window: int, sever: str | None, states: dict):
    """One restoration of `kind` at (token t, layer): (start block, input state for tokens [t, T), patches
    {module: value at token t}, a key shared by restorations that are the same computation)."""
    a = case.adapter
    if kind == "hidden":
        name = a.name("block", layer)
        h = states["corrupted"][name][:, t:].clone()
        h[:, 0] = states["clean"][name][t]
        # severed paths: later layers' module outputs at the restored token keep their corrupted values
        patches = {n: states["corrupted"][n][:, t] for n in (case.names(sever)[layer + 1 :] if sever else [])}
        return layer + 1, h, patches, (kind, layer)
    layers = window_layers(layer, a.n_layers, window)
    patches = {a.name(kind, i): states["clean"][a.name(kind, i)][t] for i in layers}
    return layers.start, states["block_input"][layers.start][:, t:], patches, (kind, layers.start, layers.stop)


def _fast(
    case: _Case, kinds: Sequence[str], window: int, sever: str | None, states: dict, replay: _Replay, corrupted: float
) -> dict[str, np.ndarray]:
    """Every restoration, computing only the blocks above it for the tokens from it on: one batched replay
    per restored token. Tokens before the subject see no noise, so restoring them changes nothing: their
    score is the corrupted score, exactly. Identical restorations (clipped windows) are computed once."""
    a, (b, _), S = case.adapter, case.span, case.samples
    out = {k: np.full((case.n_tokens, a.n_layers), corrupted) for k in kinds}
    for t in range(b, case.n_tokens):
        todo = {}
        for kind in kinds:
            for layer in range(a.n_layers):
                start, h, patches, key = _restorations(case, kind, layer, t, window, sever, states)
                todo.setdefault(key, (start, h, patches, []))[3].append((kind, layer))
        if not todo:
            break
        groups = sorted(todo.values(), key=lambda g: g[0])
        rows_of = {}  # module -> (row indices, values) of the groups that patch it
        for g, (_, _, patches, _) in enumerate(groups):
            for name, value in patches.items():
                rows_of.setdefault(name, []).append((slice(g * S, (g + 1) * S), value))

        def patch(x: torch.Tensor, name: str, rows_of=rows_of) -> torch.Tensor:
            x = x.clone()
            for rows, value in rows_of[name]:
                if rows.start < x.shape[0]:  # groups that joined the batch already
                    x[rows, 0] = value.to(x.dtype)
            return x

        replay.calls_at(t)  # recorded from an unpatched pass, so before the patches are hooked in
        with torch.no_grad(), Trace(case.model, list(rows_of), retain_output=False, edit_output=patch):
            p = replay.run(t, [(start, h) for start, h, _, _ in groups]).view(len(groups), S).mean(1)
        for g, (_, _, _, targets) in enumerate(groups):
            for kind, layer in targets:
                out[kind][t, layer] = p[g].item()
    return out


# --- attribution patching -------------------------------------------------------------------------------


def _attribution(case: _Case, kinds: Sequence[str], window: int, clean: dict) -> dict[str, np.ndarray]:
    """corrupted score + Σ_samples (clean − corrupted) · ∂ mean_p / ∂ state, per (token, layer); windows sum."""
    a = case.adapter
    names = [n for k in kinds for n in case.names(k)]
    rows = case.ids.expand(case.samples, -1)
    with torch.enable_grad():
        with Trace(case.model, [a.embed, *names], detach=False, edit_output=_only(a.embed, case.corrupt(0))) as tr:
            p = case.answer_prob(case.model(input_ids=rows, use_cache=False).logits[:, -1]).mean()
        grads = torch.autograd.grad(p, [tr[n].output for n in names])
    effect = {
        n: ((clean[n] - tr[n].output.detach()) * g).sum(dim=(0, 2)).double().cpu().numpy()
        for n, g in zip(names, grads, strict=True)
    }
    base = p.item()
    out = {}
    for kind in kinds:
        per_layer = np.stack([effect[n] for n in case.names(kind)], axis=1)  # [T, L]
        if kind != "hidden":
            per_layer = np.stack(
                [per_layer[:, window_layers(i, a.n_layers, window)].sum(1) for i in range(a.n_layers)], axis=1
            )
        out[kind] = base + per_layer
    return out


# --- the entry point ----------------------------------------------------------------------------------


def trace(
    model,
    tokenizer,
    adapter: Adapter,
    prompt: str,
    subject: str,
    target: str | None = None,
    kinds: Sequence[str] = KINDS,
    window: int | None = None,
    noise: str | float = "s3",
    samples: int = 10,
    seed: int = 1,
    method: str = "fast",
    sever: str | None = None,
    noise_subjects: Sequence[str] | None = None,
) -> TraceResult:
    """Causal trace of `prompt` (containing `subject`, or a template whose `{}` it fills) for `target`
    (default: the clean top-1 token).

    `sever` ('mlp' or 'attn') restores hidden states while keeping that module's outputs at the restored
    token frozen at their corrupted values in later layers (the paper's Figure 3); hidden kind only.
    `noise_subjects` are the subjects whose embeddings set the `s3` scale (default: this subject). `window`
    defaults to `default_window` of the model's depth.
    """
    window = default_window(adapter.n_layers) if window is None else window
    kinds = list(kinds)
    if bad := [k for k in kinds if k not in KINDS]:
        raise EditkitError(f"unknown trace kind {bad[0]!r}; use hidden, mlp, attn (or all)")
    if method not in METHODS:
        raise EditkitError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if sever not in (None, "mlp", "attn"):
        raise EditkitError(f"sever must be 'mlp' or 'attn', got {sever!r}")
    if samples < 1 or window < 1:
        raise EditkitError(f"samples and window must be ≥ 1 (got samples={samples}, window={window})")
    if "{}" in prompt:
        prompt = fill_prompt(prompt, subject)
    device = next(model.parameters()).device
    span = subject_span(tokenizer, prompt, subject)
    ids = torch.tensor([encode(tokenizer, prompt)], device=device)
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids, use_cache=False).logits[0, -1].float(), dim=-1)
    answer_id = int(probs.argmax()) if target is None else target_ids(tokenizer, prompt, target)[0]
    scale, uniform = noise_scale(model, tokenizer, adapter, noise, noise_subjects or [subject])
    case = _Case(
        model,
        adapter,
        ids,
        span,
        answer_id,
        draw_noise(samples, span[1] - span[0], adapter.hidden_size, scale, uniform, seed),
    )

    if method == "naive":
        corrupted = _run_patched(case, {})
        scores = {k: _naive(case, k, window, sever) for k in kinds}
    else:
        states, replay = _fast_runs(case, kinds, sever)
        corrupted = states["corrupted_score"]
        if method == "fast":
            scores = _fast(case, kinds, window, sever, states, replay, corrupted)
        else:
            scores = _attribution(case, kinds, window, states["clean"])
    return TraceResult(
        tokens=[tokenizer.decode([i]) for i in ids[0].tolist()],
        subject_range=span,
        answer=tokenizer.decode([answer_id]),
        answer_id=answer_id,
        clean_score=probs[answer_id].item(),
        corrupted_score=corrupted,
        noise=scale,
        scores=scores,
        window=window,
        method=method,
        samples=samples,
        seed=seed,
        sever=sever,
    )
