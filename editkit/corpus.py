"""Text corpora for statistics (C = E[kkᵀ]) and activation stores, one reader for both. Offline, a corpus is
text the model writes itself (`samples:N`, seeded and cached), a local .txt/.jsonl file, or the toy world's
corpus; a Hugging Face dataset name is read where `datasets` and the hub are reachable."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from editkit.errors import EditkitError
from editkit.io import cache_root, file_sha256
from editkit.toy import toy_path

SAMPLE_TOKENS = 128  # new tokens per sampled text
SAMPLE_BATCH = 16  # texts drawn per seeded generate call: samples:N is a prefix of samples:M for N < M
OFFLINE_HINT = (
    "pick a corpus that exists offline: samples:2000 (text the model writes itself, cached) or a local "
    ".txt/.jsonl file (--corpus PATH, or --set mom2_corpus=PATH for an edit)"
)


@dataclass(frozen=True)
class Corpus:
    """A corpus: `identity` names exactly which texts (a file's sha256, the sampling model's weights and
    seed, a dataset name); `texts()` iterates them from the start, in the same order every time."""

    spec: str
    identity: str
    texts: Callable[[], Iterator[str]]


def open_corpus(spec: str, model=None, tokenizer=None, text_field: str = "text", cache_dir=None, log=None) -> Corpus:
    """`toy`, `samples:N[:SEED]` (N texts of up to 128 tokens sampled from `model`), a .txt file (one text per
    non-empty line), a .jsonl file (field `text_field`), or a Hugging Face dataset `name[:config]`."""
    if (toy_corpus := toy_path(spec, "corpus")) is not None:
        return open_corpus(str(toy_corpus), text_field=text_field)
    if spec.startswith("samples:"):
        return _samples(spec, model, tokenizer, cache_dir, log)
    path = Path(spec).expanduser()
    if path.is_file():
        return Corpus(spec, f"file:{file_sha256(path)}", lambda: _read_file(path, text_field))
    if spec.startswith((".", "/", "~")) or path.suffix in (".txt", ".jsonl", ".json"):
        raise EditkitError(f"corpus file {spec} does not exist; pass an existing .txt/.jsonl file, or {OFFLINE_HINT}")
    return _dataset(spec, text_field)


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                record = json.loads(line)
                if not isinstance(record.get(text_field), str):
                    raise EditkitError(f"{path} line {i + 1} has no text field {text_field!r}; pass --text-field")
                yield record[text_field]
            else:
                yield line.rstrip("\n")


def _dataset(spec: str, text_field: str) -> Corpus:
    name, _, config = spec.partition(":")
    try:
        import datasets

        ds = datasets.load_dataset(name, config or None, split="train", streaming=True)
        next(iter(ds))  # streaming opens lazily: fail here, not halfway through a computation
    except ImportError:
        raise EditkitError(
            f"corpus {spec!r} needs the `datasets` package (pip install datasets), not installed here; {OFFLINE_HINT}"
        ) from None
    except Exception as e:  # noqa: BLE001 - offline, unknown name: one line for the user
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise EditkitError(f"could not open dataset {spec!r} ({first}); {OFFLINE_HINT}") from None
    return Corpus(spec, f"hf:{spec}", lambda: (row[text_field] for row in ds if row[text_field].strip()))


# --- samples from the model -------------------------------------------------------------------------------


def parse_samples(spec: str) -> tuple[int, int]:
    """`samples:N[:SEED]` -> (N, SEED); SEED defaults to 0."""
    parts = spec.split(":")[1:]
    try:
        n, seed = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        if n < 1 or len(parts) > 2:
            raise ValueError
    except (ValueError, IndexError):
        raise EditkitError(
            f"bad corpus {spec!r}; write samples:N or samples:N:SEED with N >= 1, e.g. samples:2000"
        ) from None
    return n, seed


def _samples(spec: str, model, tokenizer, cache_dir, log) -> Corpus:
    from editkit.tensors import fingerprint

    n, seed = parse_samples(spec)
    if model is None or tokenizer is None:
        raise EditkitError(f"corpus {spec} is text sampled from a model; this command has no model to sample from")
    weights = fingerprint(list(model.named_parameters()), sample=4096)[:16]
    path = cache_root(cache_dir) / "corpora" / weights / f"samples-{n}-seed{seed}-{SAMPLE_TOKENS}tok.jsonl"
    identity = f"samples:{weights}:{n}:{seed}:{SAMPLE_TOKENS}"
    if not path.exists():
        sample_texts(model, tokenizer, n, seed, path, log)
    return Corpus(spec, identity, lambda: _read_file(path, "text"))


def sample_texts(model, tokenizer, n: int, seed: int, path: Path, log=None) -> Path:
    """Write `n` texts sampled from `model` (from its BOS token, else EOS; temperature 1, no top-k/top-p,
    up to 128 new tokens each) to the .jsonl `path`. Batch b of 16 is seeded with (seed, b), so a run that
    was interrupted resumes from its `.partial` file with the same texts."""
    from editkit.evaluate.scoring import generate_texts

    start = tokenizer.bos_token if tokenizer.bos_token is not None else tokenizer.eos_token
    if start is None:
        raise EditkitError("the tokenizer has neither a BOS nor an EOS token to start samples from; pass a corpus file")
    from editkit.models import next_token_probs

    if not next_token_probs(model, tokenizer, [start]).isfinite().all():
        raise EditkitError("the model's logits are not finite (NaN or Inf); check the model's weights")
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = partial.read_text(encoding="utf-8").splitlines(keepends=True) if partial.exists() else []
    done = sum(1 for x in lines if x.endswith("\n")) // SAMPLE_BATCH * SAMPLE_BATCH
    partial.write_text("".join(lines[:done]), encoding="utf-8")
    if log:
        log(f"sampling {n:,} texts from the model into {path} ({done:,} there already)")
    with partial.open("a", encoding="utf-8") as f:
        for b in range(done // SAMPLE_BATCH, -(-n // SAMPLE_BATCH)):
            size = min(SAMPLE_BATCH, n - b * SAMPLE_BATCH)
            texts = generate_texts(
                model, tokenizer, [start] * size, max_length=SAMPLE_TOKENS + 1, top_k=0, seed=seed * 1_000_003 + b
            )
            f.write("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
            f.flush()
    partial.replace(path)
    return path
