"""What the `sae` and `features` commands do, as functions returning plain data (the CLI only renders)."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from editkit.errors import EditkitError

EVAL_FILE = "eval.json"


def _bar(enabled: bool, total: int, label: str):
    """(progress, callback(n)): a rich progress bar over `total` units, or no-ops."""
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(), lambda n: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn())
    task = bar.add_task(label, total=total)
    return bar, lambda n: bar.update(task, completed=n)


def run_sae_train(
    model: str,
    hook: str,
    corpus: str,
    out: Path,
    d_sae: int,
    arch: str = "relu",
    k: int | None = None,
    max_tokens: int = 200_000,
    store: Path | None = None,
    eval_texts: int = 500,
    device: str = "cpu",
    progress: bool = True,
    **train_kwargs,
) -> dict:
    """Cache activations (resumable), train an SAE, save it in SAELens format with its evaluation."""
    from editkit.features.evaluate import evaluate_sae
    from editkit.features.hookpoints import hook_width, resolve_hook
    from editkit.features.sae import SAEConfig
    from editkit.features.store import ActivationStore, cache_activations, read_corpus
    from editkit.features.train import train_sae
    from editkit.models import load_model

    m, tok, adapter = load_model(model, device=device)
    hp = resolve_hook(adapter, hook)
    cfg = SAEConfig(
        d_in=hook_width(m, adapter, hp),
        d_sae=d_sae,
        architecture=arch,
        k=k,
        hook_name=hp.name,
        model_name=model,
        dataset_path=corpus,
        **train_kwargs,
    )
    store = store or out.parent / f"{out.name}.activations.h5"
    bar, tick = _bar(progress, max_tokens, "caching activations")
    with bar:
        cache_activations(m, tok, adapter, hp, corpus, store, max_tokens, model, cfg.context_size, progress=tick)
    acts = ActivationStore(store)
    sae, log = train_sae(acts.batches(cfg.batch_size, cfg.seed), cfg, progress=progress)
    sae.save(out)
    held_out = list(islice(read_corpus(corpus), int(acts.attrs["texts_done"]), None))[:eval_texts]
    result = {"sae": str(out), "store": str(store), "tokens": acts.n_tokens, "final": log[-1]}
    if held_out:
        ev = evaluate_sae(m, tok, adapter, sae.to(m.device), held_out, cfg.context_size)
        ev.save(out / EVAL_FILE)
        result["eval"] = ev.to_json()
    return result


def run_sae_eval(model: str, sae_dir: Path, corpus: str, texts: int, skip: int, device: str = "cpu") -> dict:
    """Evaluate a saved SAE on `texts` texts of `corpus` after the first `skip`."""
    from editkit.features.evaluate import evaluate_sae
    from editkit.features.sae import SAE
    from editkit.features.store import read_corpus
    from editkit.models import load_model

    sae = SAE.load(sae_dir)
    m, tok, adapter = load_model(model, device=device)
    sample = list(islice(read_corpus(corpus), skip, skip + texts))
    if not sample:
        raise EditkitError(f"corpus {corpus!r} has no texts after the first {skip}; lower --skip")
    return evaluate_sae(m, tok, adapter, sae.to(m.device), sample).to_json()
