"""The edit workflows behind `editkit edit / apply / revert / stats`, as library calls returning plain data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from editkit.edit import EditResult, Stats, edit, load_hparams, needs_stats
from editkit.edit.checkpoint import load_checkpoint, plain_note, read_provenance, save_checkpoint
from editkit.edit.result import Context, behind
from editkit.requests import EditRequest


def probe_prompts(request: EditRequest, record=None, fallback: dict[str, str] | None = None) -> dict[str, str]:
    """Prompts to show before/after: the edit prompt, and a paraphrase and a neighbour from the request's
    dataset record (CounterFact, zsRE, EasyEdit), else the `fallback` ones (the toy world's on the toy model)."""
    from editkit.evaluate.suites import probes as record_probes

    probes = {"edit": request.text}
    paraphrases, neighbours = record_probes(record) if record is not None else ((), ())
    if paraphrases:
        probes["paraphrase"] = paraphrases[0]
    if neighbours:
        probes["neighbour"] = neighbours[0]
    if len(probes) == 1 and fallback:
        probes.update(fallback)
    return probes


def predictions(model, tokenizer, prompts: dict[str, str], request: EditRequest, context: Context = None) -> list[dict]:
    """Top-1 token per probe prompt (behind the edit's `context`, if any), with the probabilities of
    target_new and target_true's first tokens."""
    from editkit.models import next_token_probs
    from editkit.tokens import target_ids

    probs = next_token_probs(model, tokenizer, behind(context, prompts.values()))
    out = []
    for (kind, prompt), p in zip(prompts.items(), probs, strict=True):
        row = {"probe": kind, "prompt": prompt, "top": tokenizer.decode([int(p.argmax())]), "top_prob": p.max().item()}
        for key in ("target_new", "target_true"):
            if getattr(request, key):
                row[f"p_{key}"] = p[target_ids(tokenizer, prompt, getattr(request, key))[0]].item()
        out.append(row)
    return out


def edit_requests(
    prompt: str | None,
    subject: str | None,
    target_new: str | None,
    target_true: str | None = None,
    requests_file: str | Path | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[EditRequest], object | None]:
    """The requests of `editkit edit` and the first one's dataset record (None for plain requests): those of
    `requests_file` (`load_edit_requests`), else the one request given by prompt, subject and target_new."""
    from editkit.errors import EditkitError
    from editkit.evaluate.datasets import load_edit_requests

    if requests_file is not None:
        pairs = load_edit_requests(requests_file, limit, offset)
        return [r for r, _ in pairs], pairs[0][1]
    if prompt is None or subject is None or target_new is None:
        raise EditkitError("pass --prompt, --subject and --target-new, or --requests FILE")
    return [EditRequest(prompt, subject, target_new, target_true)], None


def make_stats(model, tokenizer, adapter, hp, cache_dir=None, progress=False) -> Stats:
    return Stats(model, tokenizer, adapter, hp.mom2_corpus, hp.mom2_n_tokens, cache_dir=cache_dir, progress=progress)


def run_edit(
    model_name: str,
    requests: list[EditRequest],
    method: str,
    mode: str = "batch",
    hparams_file: str | Path | None = None,
    overrides: tuple[str, ...] = (),
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    record=None,
    progress: bool = False,
) -> dict:
    """Load the model, edit it, and report before/after predictions on the first request's probes (from its
    dataset `record`); save the edit to `out` and the edited model to `checkpoint` (which also carries the
    edit, for `revert`)."""
    from editkit.models import load_model
    from editkit.toy import is_toy
    from editkit.toy.sources import edit_probes

    hp = load_hparams(method, model_name, hparams_file, overrides)
    model, tokenizer, adapter = load_model(model_name, device=device)
    stats = make_stats(model, tokenizer, adapter, hp, cache_dir, progress) if needs_stats(method, hp) else None
    probes = probe_prompts(requests[0], record, edit_probes(requests[0]) if is_toy(model_name) else None)
    before = predictions(model, tokenizer, probes, requests[0])
    result = edit(model, tokenizer, adapter, requests, method, hp, stats, mode)
    result.model = model_name
    after = predictions(model, tokenizer, probes, requests[0], result.reader)
    if out is not None:
        result.save(out)
    if checkpoint is not None:
        save_checkpoint(model, tokenizer, checkpoint, result, model_name)
    return {
        "method": method,
        "mode": mode,
        "requests": [dataclasses.asdict(r) for r in requests],
        "before": before,
        "after": after,
        "edit_dir": str(out) if out is not None else None,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "note": plain_note(result) if checkpoint is not None else None,
    }


def run_apply(model_name: str, edit_dir: str | Path, checkpoint: str | Path, device: str = "cpu") -> dict:
    """Apply a saved edit to the model it was made on and write the edited checkpoint."""
    from editkit.models import load_model

    result = EditResult.load(edit_dir)
    model, tokenizer, _ = load_model(model_name, device=device)
    result.apply(model)
    save_checkpoint(model, tokenizer, checkpoint, result, model_name)
    return {
        "edit_dir": str(edit_dir),
        "checkpoint": str(checkpoint),
        "modules": result.sites,
        "note": plain_note(result),
    }


def run_revert(checkpoint: str | Path, out: str | Path, device: str = "cpu") -> dict:
    """Restore an edited checkpoint's touched weights bit for bit (and drop its side memories) and write the
    result to `out`."""
    from editkit.errors import EditkitError

    info = read_provenance(checkpoint)
    (model, tokenizer, _), result = load_checkpoint(checkpoint, device)
    if result is None:
        raise EditkitError(f"{checkpoint} carries no edit (no editkit_edit/); nothing to revert")
    result.revert(model)
    save_checkpoint(model, tokenizer, out, None, f"{info.get('source_model', '')} (reverted from {checkpoint})")
    return {"checkpoint": str(checkpoint), "out": str(out), "modules": result.sites}


def run_stats(
    model_name: str,
    layers: list[int],
    corpus: str = "samples:2000",
    n_tokens: int = 100_000,
    cache_dir=None,
    device: str = "cpu",
    progress: bool = False,
) -> dict:
    """Compute (or read from the cache) C = E[k kᵀ] at `layers`; report where each is cached."""
    from editkit.models import load_model

    model, tokenizer, adapter = load_model(model_name, device=device)
    stats = Stats(model, tokenizer, adapter, corpus, n_tokens, cache_dir=cache_dir, progress=progress)
    cs = stats.compute(layers)
    return {
        "model": model_name,
        "corpus": corpus,
        "n_tokens": n_tokens,
        "layers": {
            str(i): {"dim": c.shape[0], "trace": c.trace().item(), "cache": str(stats.path(stats.key(i)))}
            for i, c in cs.items()
        },
    }
