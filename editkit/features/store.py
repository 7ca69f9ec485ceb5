"""Activation store: a hook point's activations over a corpus, streamed into one HDF5 file.

The file holds `activations [n_tokens, d_in]` (chunked, grown as batches arrive) and, for a transcoder's
store, `activations_out [n_tokens, d_out]` at a second hook for the same tokens of the same forward
pass; as attributes, the model, hook(s), corpus, context size, tokens written and texts consumed.
Writing again to the same file with the same settings (and batch size) resumes where it stopped, within
a batch if need be. Padding and special tokens are skipped (BOS too, unless `skip_bos=False`). With
`prepend_bos` every text gets the tokenizer's BOS first (as SAELens trains with `prepend_bos`); the store
records it, so stores with and without it never mix.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from editkit.corpus import open_corpus
from editkit.errors import EditkitError
from editkit.features.hookpoints import HookPoint, hook_value, hook_width, trace_hooks
from editkit.tensors import fingerprint
from editkit.tokens import bos_to_prepend, pad_id, pad_rows, with_bos

DATASET, DATASET_OUT = "activations", "activations_out"


def keep_mask(ids: torch.Tensor, mask: torch.Tensor, tokenizer, skip_bos: bool) -> torch.Tensor:
    """Positions to store: real, non-special tokens, plus a leading BOS when `skip_bos` is False."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=ids.dtype)
    keep = mask.bool() & ~torch.isin(ids, special)
    if not skip_bos and tokenizer.bos_token_id is not None:
        keep[:, 0] |= (ids[:, 0] == tokenizer.bos_token_id) & mask[:, 0].bool()
    return keep


def tokenize(
    tokenizer, texts: list[str], context_size: int, bos: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `input_ids` and `attention_mask` of `texts`, each with `bos` first where given (and not
    already there), truncated to `context_size` tokens (the BOS counted)."""
    rows = tokenizer(texts, truncation=True, max_length=context_size)["input_ids"]
    rows = [with_bos(r, bos)[:context_size] for r in rows if r]
    if not rows:
        raise EditkitError("every text in the batch tokenizes to nothing; pass a corpus with visible text")
    return pad_rows(rows, pad_id(tokenizer))


@torch.no_grad()
def hook_activations(
    model,
    tokenizer,
    hook: HookPoint,
    texts: list[str],
    context_size: int,
    skip_bos: bool = True,
    bos: int | None = None,
):
    """Activations `[n_kept, d_in]` at `hook` for the kept tokens of `texts` (each truncated to `context_size`,
    `bos` first where given)."""
    return paired_activations(model, tokenizer, [hook], texts, context_size, skip_bos, bos)[0]


@torch.no_grad()
def paired_activations(
    model,
    tokenizer,
    hooks: list[HookPoint],
    texts: list[str],
    context_size: int,
    skip_bos: bool = True,
    bos: int | None = None,
) -> list[torch.Tensor]:
    """Activations `[n_kept, width]` at each of `hooks`, for the same kept tokens of one forward pass (`bos`
    first on every text where given)."""
    device = next(model.parameters()).device
    ids, mask = tokenize(tokenizer, texts, context_size, bos)
    with trace_hooks(model, hooks, stop=True) as tr:
        model(input_ids=ids.to(device), attention_mask=mask.to(device))
    keep = keep_mask(ids, mask, tokenizer, skip_bos).to(device)
    return [hook_value(tr, h)[keep].float().cpu() for h in hooks]


def cache_activations(
    model,
    tokenizer,
    adapter,
    hook: HookPoint,
    corpus: str,
    path: str | Path,
    max_tokens: int,
    model_name: str = "",
    context_size: int = 128,
    batch_size: int = 64,
    skip_bos: bool = True,
    texts: Iterable[str] | None = None,
    progress=None,
    hook_out: HookPoint | None = None,
    prepend_bos: bool = False,
) -> Path:
    """Stream `hook`'s activations over `corpus` into `path` until `max_tokens` are stored (or the corpus
    ends), with `hook_out`'s beside them for a transcoder, every text with the tokenizer's BOS first where
    `prepend_bos`; resumes a file written with the same settings. `progress(n_tokens)` is called per batch."""
    import h5py

    bos = bos_to_prepend(tokenizer, prepend_bos, "--prepend-bos puts a BOS first on every text", "drop --prepend-bos")
    path = Path(path)
    hooks = [hook] if hook_out is None else [hook, hook_out]
    names = (DATASET, DATASET_OUT)[: len(hooks)]
    widths = {name: hook_width(model, adapter, h) for name, h in zip(names, hooks, strict=True)}
    attrs = {"model": model_name, "hook_name": hook.name, "corpus": corpus, "context_size": context_size}
    attrs["skip_bos"], attrs["prepend_bos"], attrs["d_in"] = skip_bos, prepend_bos, widths[DATASET]
    if hook_out is not None:
        attrs["hook_name_out"], attrs["d_out"] = hook_out.name, widths[DATASET_OUT]
    # The weights, not just the name: a store of another model's activations must never be resumed.
    attrs["weights"] = fingerprint(list(model.named_parameters()), sample=4096)[:16]
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "a") as f:
        _check_or_init(f, path, attrs, widths)
        n, done = int(f.attrs["n_tokens"]), int(f.attrs["texts_done"])
        for name in widths:
            f[name].resize(n, axis=0)  # drop rows of a batch interrupted before its attributes were written
        partial = n - int(f.attrs["tokens_of_done_texts"])  # rows already stored from the next batch
        texts = texts if texts is not None else open_corpus(corpus, model, tokenizer).texts()
        stream = islice(iter(texts), done, None)
        while n < max_tokens and not f.attrs["complete"]:
            batch = list(islice(stream, batch_size))
            if not batch:
                f.attrs["complete"] = True
                break
            acts = paired_activations(model, tokenizer, hooks, batch, context_size, skip_bos, bos)
            for name, a in zip(widths, acts, strict=True):
                new = a[partial : partial + max_tokens - n]
                f[name].resize(n + len(new), axis=0)
                f[name][n:] = new.numpy()
            n += len(new)
            if partial + len(new) == len(acts[0]):  # the whole batch is stored
                done, partial = done + len(batch), 0
                f.attrs["texts_done"], f.attrs["tokens_of_done_texts"] = done, n
            f.attrs["n_tokens"] = n
            f.flush()
            if progress is not None:
                progress(n)
    return path


_BEFORE_KEY = {"prepend_bos": False}  # what a store written before the key existed did


def _check_or_init(f, path: Path, attrs: dict, widths: dict[str, int]) -> None:
    if DATASET not in f:
        for name, d in widths.items():
            f.create_dataset(name, shape=(0, d), maxshape=(None, d), dtype="float32", chunks=(1024, d))
        f.attrs.update({**attrs, "n_tokens": 0, "texts_done": 0, "tokens_of_done_texts": 0, "complete": False})
        return
    if (DATASET_OUT in f) != (DATASET_OUT in widths):
        has = f"paired activations ({f.attrs.get('hook_name_out')})" if DATASET_OUT in f else "one hook's activations"
        raise EditkitError(
            f"{path} holds {has}; pass a new --store path for this {'transcoder' if DATASET_OUT in widths else 'SAE'}"
        )
    for key, value in attrs.items():
        have = f.attrs.get(key, _BEFORE_KEY.get(key))
        have = have.item() if isinstance(have, np.generic) else have
        if have != value:
            raise EditkitError(
                f"{path} holds activations with {key}={have!r}, not {value!r}; "
                "pass a new --store path or the same settings to resume"
            )


class ActivationStore:
    """Read access to an activation file: its attributes and shuffled training batches (of (x, y) pairs
    where the store is a transcoder's)."""

    def __init__(self, path: str | Path):
        import h5py

        self.path = Path(path)
        if not self.path.exists():
            raise EditkitError(f"activation store {path} does not exist; write it with cache_activations first")
        with h5py.File(self.path, "r") as f:
            if DATASET not in f:
                raise EditkitError(f"{path} is not an editkit activation store (no {DATASET!r} dataset)")
            self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
            self.n_tokens, self.d_in = int(self.attrs["n_tokens"]), int(f[DATASET].shape[1])
            self.paired = DATASET_OUT in f
        if self.n_tokens == 0:
            raise EditkitError(f"activation store {path} is empty; the corpus gave no tokens")

    def read(self, start: int = 0, stop: int | None = None, dataset: str = DATASET) -> torch.Tensor:
        """Rows `[start, stop)` of the inputs (or of `activations_out`, a transcoder's targets)."""
        import h5py

        with h5py.File(self.path, "r") as f:
            return torch.from_numpy(f[dataset][start : min(stop or self.n_tokens, self.n_tokens)])

    def batches(self, batch_size: int, seed: int, buffer: int = 1 << 16) -> Iterator:
        """Endless shuffled batches (x, or (x, y) for a transcoder's store): blocks of `buffer` rows in a
        seeded random order, rows shuffled within."""
        g = torch.Generator().manual_seed(seed)
        starts = list(range(0, self.n_tokens, buffer))
        while True:
            for b in torch.randperm(len(starts), generator=g).tolist():
                block = self.read(starts[b], starts[b] + buffer)
                order = torch.randperm(len(block), generator=g)
                block = block[order]
                out = self.read(starts[b], starts[b] + buffer, DATASET_OUT)[order] if self.paired else None
                for i in range(0, max(1, len(block) - batch_size + 1), batch_size):
                    rows = slice(i, i + batch_size)
                    yield block[rows] if out is None else (block[rows], out[rows])
