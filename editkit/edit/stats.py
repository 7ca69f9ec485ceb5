"""Second-moment statistics C = E[k kᵀ] of the keys k (inputs of an MLP output projection), accumulated in
float64 over a corpus and cached in HDF5.

A cache file is keyed by a fingerprint of the weights that produce the keys, the module, the corpus and the
token count. Partial sums are checkpointed, so an interrupted computation resumes where it stopped; a file
whose checksum, shape or key does not match is reported and recomputed, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from editkit.corpus import Corpus, open_corpus
from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.io import atomic_write_bytes, cache_root
from editkit.progress import progress_bar
from editkit.tensors import fingerprint

FORMAT_VERSION = 2  # 2: the checksum covers every attribute, not only the sum
DEFAULT_CORPUS = "samples:2000"  # any model, offline: 2,000 texts of up to 128 tokens the model writes itself


def key_fingerprint(model, adapter, layer: int) -> str:
    """Identity of everything that computes the keys at `layer`: embeddings and blocks 0..layer (sampled)."""
    prefixes = (adapter.embed, *(adapter.name("block", i) + "." for i in range(layer + 1)))
    named = [(n, p) for n, p in model.named_parameters() if n.startswith(prefixes)]
    return fingerprint(named, sample=1 << 16)


# --- corpora: editkit.corpus ------------------------------------------------------------------------


def token_batches(tokenizer, texts: Iterator[str], max_len: int, batch_tokens: int) -> Iterator[list[list[int]]]:
    """Greedy batches of token rows (each text truncated to `max_len`), about `batch_tokens` tokens each.
    Batches depend only on the text order, so a resumed run sees the same batches."""
    batch, size = [], 0
    for text in texts:
        ids = tokenizer(text, verbose=False)["input_ids"][:max_len]
        if not ids:
            continue
        batch.append(ids)
        size += len(ids)
        if size >= batch_tokens:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# --- the cache file ------------------------------------------------------------------------------------


def _checksum(a: np.ndarray, attrs: dict) -> str:
    """sha256 over the sum's bytes and every attribute but the checksum itself."""
    h = hashlib.sha256(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps({k: v for k, v in attrs.items() if k != "checksum"}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def write_cache(path: Path, total: np.ndarray, attrs: dict) -> None:
    """HDF5 file with the float64 sum of k kᵀ and its bookkeeping, written atomically; a sum that is not
    finite is refused (never cached)."""
    import h5py

    if not np.isfinite(total).all():
        raise EditkitError(
            f"the keys at {attrs.get('module')} are not finite (NaN or Inf) on the corpus, so C = E[kkᵀ] is not; "
            "check the model's weights (nothing was cached)"
        )
    attrs = {**attrs, "format": FORMAT_VERSION}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("sum_kkT", data=total)
        for k, v in {**attrs, "checksum": _checksum(total, attrs)}.items():
            f.attrs[k] = v
    atomic_write_bytes(path, buf.getvalue())


def read_cache(path: Path, expect: dict, dim: int) -> tuple[np.ndarray, dict]:
    """(sum, attrs) of a cache file after checking format, key, shape and checksum; EditkitError if any fails."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            total = f["sum_kkT"][()]
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    except (OSError, KeyError) as e:
        raise EditkitError(
            f"statistics cache {path} is corrupt (cannot read it: {e}); delete it to recompute"
        ) from None
    for k, v in {**expect, "format": FORMAT_VERSION}.items():
        if attrs.get(k) != v:
            raise EditkitError(f"statistics cache {path} does not match: {k} is {attrs.get(k)!r}, expected {v!r}")
    if total.shape != (dim, dim) or total.dtype != np.float64:
        raise EditkitError(f"statistics cache {path} has shape {total.shape} {total.dtype}, expected ({dim}, {dim})")
    if attrs.get("checksum") != _checksum(total, attrs):
        raise EditkitError(f"statistics cache {path} is corrupt (checksum mismatch); delete it to recompute")
    count, done = attrs.get("count"), attrs.get("texts_done")
    if not (np.isfinite(total).all() and isinstance(count, int) and count > 0 and isinstance(done, int) and done >= 0):
        raise EditkitError(f"statistics cache {path} holds a non-finite sum or a bad count; delete it to recompute")
    return total, attrs


# --- accumulation -------------------------------------------------------------------------------------


def _console_log(msg: str) -> None:
    print(f"editkit: {msg}", file=sys.stderr)


class Stats:
    """Second moments C = E[k kᵀ] per layer for one model, computed on demand and cached on disk.

    `C(layer)` returns a float64 `[in, in]` tensor. Several layers are computed in one pass with `compute`.
    """

    def __init__(
        self,
        model,
        tokenizer,
        adapter,
        corpus: str = DEFAULT_CORPUS,
        n_tokens: int = 100_000,
        cache_dir: str | Path | None = None,
        progress: bool = False,
        log: Callable[[str], None] = _console_log,
        batch_tokens: int = 8192,
        checkpoint_s: float = 60.0,
    ):
        self.model, self.tokenizer, self.adapter = model, tokenizer, adapter
        self.corpus, self.n_tokens = corpus, n_tokens
        self.cache_dir, self.root = cache_dir, cache_root(cache_dir) / "stats"
        self.progress, self.log = progress, log
        self.batch_tokens, self.checkpoint_s = batch_tokens, checkpoint_s
        self._memo: dict[int, torch.Tensor] = {}
        self._projectors: dict[tuple[int, float], torch.Tensor] = {}
        self._eig: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._corpus: Corpus | None = None

    def C(self, layer: int) -> torch.Tensor:
        layer = self.adapter.layer(layer)
        if layer not in self._memo:
            self.compute([layer])
        return self._memo[layer]

    def eig(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (ascending) and eigenvectors of C (float64, memoised)."""
        layer = self.adapter.layer(layer)
        if layer not in self._eig:
            self._eig[layer] = torch.linalg.eigh(self.C(layer))
        return self._eig[layer]

    def solve(self, layer: int, k: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
        """C⁻¹k in float64 for a key `[in]` or keys as columns `[in, n]`; directions C does not span (eigenvalue
        below rtol·max, e.g. units that never fire on the corpus) are dropped instead of amplified by 1/0."""
        eigvals, U = self.eig(layer)
        U, eigvals = U.to(k.device), eigvals.to(k.device)
        keep = eigvals > rtol * eigvals[-1]
        scale = eigvals[keep].view(-1, *[1] * (k.dim() - 1))
        return U[:, keep] @ ((U[:, keep].T @ k.double()) / scale)

    def projector(self, layer: int, threshold: float) -> torch.Tensor:
        """AlphaEdit's P = U Uᵀ over the eigenvectors of C with eigenvalue < threshold (float64, memoised)."""
        key = (self.adapter.layer(layer), threshold)
        if key not in self._projectors:
            eigvals, U = self.eig(layer)
            U = U[:, eigvals < threshold]
            self._projectors[key] = U @ U.T
        return self._projectors[key]

    def _open(self) -> Corpus:
        if self._corpus is None:
            self._corpus = open_corpus(self.corpus, self.model, self.tokenizer, cache_dir=self.cache_dir, log=self.log)
        return self._corpus

    def key(self, layer: int) -> dict:
        """What a cache file for `layer` must have been computed from."""
        return {
            "fingerprint": key_fingerprint(self.model, self.adapter, layer),
            "module": self.adapter.name("mlp_out", layer),
            "corpus": self._open().identity,
            "n_tokens": int(self.n_tokens),
        }

    def path(self, key: dict) -> Path:
        name = f"{key['module']}-{key['corpus'].split(':')[-1][:12]}-{key['n_tokens']}.h5"
        return self.root / key["fingerprint"][:16] / name

    def dim(self, layer: int) -> int:
        return self.adapter.mlp_out_weight(self.model, layer).shape[1]

    def compute(self, layers: list[int]) -> dict[int, torch.Tensor]:
        """C for each of `layers`: read complete caches, resume partial ones, compute the rest in one pass."""
        layers = sorted({self.adapter.layer(i) for i in layers})
        todo = {}
        for layer in (i for i in layers if i not in self._memo):
            key = self.key(layer)
            state = self._load(layer, key)
            if state is not None and state[1]["complete"]:
                self._memo[layer] = torch.from_numpy(state[0] / state[1]["count"])
            else:
                todo[layer] = (key, state)
        if todo:
            self._accumulate(todo)
        return {i: self._memo[i] for i in layers}

    def _load(self, layer: int, key: dict):
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return read_cache(path, key, self.dim(layer))
        except EditkitError as e:
            self.log(f"{e}: recomputing")
            path.unlink()
            return None

    def _accumulate(self, todo: dict) -> None:
        """One pass over the corpus for every layer in `todo`, starting where the least advanced cache stopped.
        Layers resumed from different points are not mixed: each resumes only if all share the same point."""
        states = {i: s for i, (_, s) in todo.items()}
        starts = {s[1]["texts_done"] if s else 0 for s in states.values()}
        resume = len(starts) == 1 and next(iter(starts)) > 0
        total = {i: (states[i][0] if resume else np.zeros((self.dim(i),) * 2)) for i in todo}
        count = next(iter(states.values()))[1]["count"] if resume else 0
        texts_done = next(iter(starts)) if resume else 0
        if resume:
            self.log(f"resuming statistics from {count:,} tokens")
        device = next(self.model.parameters()).device
        names = {self.adapter.name("mlp_out", i): i for i in todo}
        max_len = int(getattr(self.model.config, "max_position_embeddings", None) or 1024)
        texts = self._open().texts()
        for _ in range(texts_done):
            next(texts, None)
        acc = {i: torch.from_numpy(t) for i, t in total.items()}
        last_save = t0 = time.monotonic()
        label, start = f"C = E[kkᵀ] layers {', '.join(map(str, todo))}", count
        with progress_bar(label, self.n_tokens, "tokens", self.progress, count, transient=True) as bar:
            for rows in token_batches(self.tokenizer, texts, min(max_len, 1024), self.batch_tokens):
                if count >= self.n_tokens:
                    break
                keys = self._keys(rows, names, device)
                take = min(self.n_tokens - count, next(iter(keys.values())).shape[0])
                for i, k in keys.items():
                    k = k[:take].double().cpu()
                    acc[i].addmm_(k.T, k)
                count += take
                texts_done += len(rows)
                bar(count, f"{(count - start) / max(time.monotonic() - t0, 1e-9):,.0f} tok/s")
                if time.monotonic() - last_save > self.checkpoint_s and count < self.n_tokens:
                    self._save(todo, acc, count, texts_done, complete=False)
                    last_save = time.monotonic()
        if count == 0:
            raise EditkitError(f"corpus {self.corpus} gave no tokens; pass a corpus with text in it")
        if count < self.n_tokens:
            self.log(f"corpus {self.corpus} has only {count:,} tokens (asked for {self.n_tokens:,}); using them all")
        self._save(todo, acc, count, texts_done, complete=True)
        for i in todo:
            self._memo[i] = acc[i] / count

    @torch.no_grad()
    def _keys(self, rows: list[list[int]], names: dict[str, int], device) -> dict[int, torch.Tensor]:
        """Keys (inputs of mlp_out) at every real token of a right-padded batch, per layer."""
        from editkit.tokens import pad_id, pad_rows

        ids, mask = pad_rows(rows, pad_id(self.tokenizer))
        with Trace(self.model, list(names), retain_output=False, retain_input=True, stop=True) as tr:
            self.model(input_ids=ids.to(device), attention_mask=mask.to(device))
        keep = mask.reshape(-1).bool().to(device)
        return {i: tr[n].input.reshape(-1, tr[n].input.shape[-1])[keep] for n, i in names.items()}

    def _save(self, todo: dict, acc: dict, count: int, texts_done: int, complete: bool) -> None:
        for i, (key, _) in todo.items():
            attrs = {**key, "count": count, "texts_done": texts_done, "complete": complete}
            write_cache(self.path(key), acc[i].numpy(), attrs)
