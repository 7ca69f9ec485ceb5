"""What the `sae` and `features` commands do, as functions returning plain data (the CLI only renders)."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from editkit.errors import EditkitError
from editkit.progress import progress_bar

EVAL_FILE = "eval.json"


def run_sae_train(
    model: str,
    hook: str,
    corpus: str,
    out: Path,
    d_sae: int,
    arch: str = "standard",
    k: int | None = None,
    max_tokens: int = 200_000,
    store: Path | None = None,
    eval_texts: int = 500,
    device: str = "cpu",
    progress: bool = True,
    hook_out: str | None = None,
    **train_kwargs,
) -> dict:
    """Cache activations (resumable; every text with the tokenizer's BOS first where `prepend_bos` is among
    `train_kwargs`), train an SAE (a transcoder from `hook` to `hook_out` where that is given), save it in
    SAELens format with its evaluation."""
    from editkit.corpus import open_corpus
    from editkit.features.evaluate import evaluate_sae
    from editkit.features.hookpoints import hook_width, resolve_hook
    from editkit.features.sae import SAEConfig
    from editkit.features.store import ActivationStore, cache_activations
    from editkit.features.train import train_sae
    from editkit.models import load_model

    m, tok, adapter = load_model(model, device=device)
    hp = resolve_hook(adapter, hook)
    hp_out = resolve_hook(adapter, hook_out) if hook_out else None
    cfg = SAEConfig(
        d_in=hook_width(m, adapter, hp),
        d_sae=d_sae,
        architecture=arch,
        k=k,
        hook_name=hp.name,
        hook_name_out=hp_out.name if hp_out else "",
        d_out=hook_width(m, adapter, hp_out) if hp_out else None,
        model_name=model,
        dataset_path=corpus,
        **train_kwargs,
    )
    store = store or out.parent / f"{out.name}.activations.h5"
    with progress_bar("caching activations", max_tokens, "tokens", progress) as tick:
        cache_activations(
            m,
            tok,
            adapter,
            hp,
            corpus,
            store,
            max_tokens,
            model,
            cfg.context_size,
            progress=tick,
            hook_out=hp_out,
            prepend_bos=cfg.prepend_bos,
        )
    acts = ActivationStore(store)
    sae, log = train_sae(acts.batches(cfg.batch_size, cfg.seed), cfg, progress=progress)
    sae.save(out)
    held_out = list(islice(open_corpus(corpus, m, tok).texts(), int(acts.attrs["texts_done"]), None))[:eval_texts]
    result = {"sae": str(out), "store": str(store), "tokens": acts.n_tokens, "final": log[-1]}
    if held_out:
        ev = evaluate_sae(m, tok, adapter, sae.to(m.device), held_out, cfg.context_size)
        ev.save(out / EVAL_FILE)
        result["eval"] = ev.to_json()
    return result


def run_sae_eval(model: str, sae_dir: Path, corpus: str, texts: int, skip: int, device: str = "cpu") -> dict:
    """Evaluate a saved SAE on `texts` texts of `corpus` after the first `skip`."""
    from editkit.corpus import open_corpus
    from editkit.features.evaluate import evaluate_sae
    from editkit.features.sae import SAE
    from editkit.models import load_model

    sae = SAE.load(sae_dir)
    m, tok, adapter = load_model(model, device=device)
    sample = list(islice(open_corpus(corpus, m, tok).texts(), skip, skip + texts))
    if not sample:
        raise EditkitError(f"corpus {corpus!r} has no texts after the first {skip}; lower --skip")
    return evaluate_sae(m, tok, adapter, sae.to(m.device), sample).to_json()


def run_attribute(
    model: str,
    sae_dir: Path,
    prompt: str,
    subject: str | None,
    target: str | None,
    target_alt: str | None,
    counterfactual_subject: str | None,
    top: int,
    device: str = "cpu",
) -> dict:
    """Attribute a fact to SAE features and verify the top ones (see `attribute_features`)."""
    from editkit.features.attribution import attribute_features
    from editkit.features.sae import SAE
    from editkit.models import load_model
    from editkit.requests import fill_prompt

    text = fill_prompt(prompt, subject) if "{}" in prompt and subject else prompt
    counterfactual = None
    if counterfactual_subject:
        if not subject:
            raise EditkitError("--counterfactual-subject needs --subject (the subject it replaces)")
        counterfactual = text.replace(subject, counterfactual_subject, 1)
    sae = SAE.load(sae_dir)
    m, tok, adapter = load_model(model, device=device)
    result = attribute_features(m, tok, adapter, sae, text, target, target_alt, subject, counterfactual, top)
    return result.to_json()


def run_steer(
    model: str,
    sae_dir: Path,
    prompt: str,
    feature: int,
    clamp: str | None,
    add: float | None,
    max_new_tokens: int,
    device: str = "cpu",
    corpus_spec: str | None = None,
    texts: int = 2000,
    fallback_corpus: str | None = None,
) -> dict:
    """Greedy text without and with steering; `clamp` may be `<m>x`: m × the feature's largest activation
    over `texts` texts of `corpus_spec` (default: the SAE's training corpus, else `fallback_corpus`), cached."""
    from editkit.corpus import open_corpus
    from editkit.features.sae import SAE
    from editkit.features.steering import max_activations, steer
    from editkit.models import load_model

    sae = SAE.load(sae_dir)
    sae.check_feature(feature)
    m, tok, adapter = load_model(model, device=device)
    sae = sae.to(m.device)
    value, multiple = None, None
    if clamp is not None:
        try:
            multiple = float(clamp[:-1]) if clamp.endswith("x") else None
            value = None if multiple is not None else float(clamp)
        except ValueError:
            raise EditkitError(f"--clamp {clamp!r} is not a number or a multiple like 5x") from None
    if multiple is not None:
        if not (source := corpus_spec or sae.cfg.dataset_path or fallback_corpus):
            raise EditkitError(f"--clamp {clamp}: the SAE names no corpus to take the maximum over; pass --corpus")
        corpus = open_corpus(source, m, tok)
        peak = float(max_activations(m, tok, adapter, sae, corpus, texts)[feature])
        if peak <= 0:
            raise EditkitError(f"feature {feature} never fires on {texts} texts of {corpus.spec}; clamp to a number")
        value = multiple * peak
    return steer(m, tok, adapter, sae, prompt, feature, value, add, max_new_tokens).to_json()


def run_probe_cmd(
    model: str,
    dataset: str,
    label: str,
    out: Path,
    position: str,
    layers: str,
    relation: str | None,
    folds: int,
    seed: int,
    device: str = "cpu",
) -> dict:
    """Probe every requested layer and write probe.json, probes.safetensors and accuracy.png to `out`."""
    from editkit.features.probes import run_probe
    from editkit.models import load_model

    m, tok, adapter = load_model(model, device=device)
    result = run_probe(m, tok, adapter, dataset, label, position, layers, relation, folds, seed)
    result.save(out)
    return {**result.to_json(), "out": str(out)}


def run_show(
    model: str, sae_dir: Path, feature: int, corpus: str, texts: int, top: int, html: Path | None, device: str = "cpu"
) -> dict:
    """Top-activating contexts and logit lens of one feature (and an HTML page when `html` is given)."""
    from editkit.corpus import open_corpus
    from editkit.features.inspect import inspect_feature, write_html
    from editkit.features.sae import SAE
    from editkit.models import load_model

    sae = SAE.load(sae_dir)
    sae.check_feature(feature)
    m, tok, adapter = load_model(model, device=device)
    sample = list(islice(open_corpus(corpus, m, tok).texts(), texts))
    report = inspect_feature(m, tok, adapter, sae.to(m.device), feature, sample, top)
    if html is not None:
        write_html(report, html)
    return report.to_json()


def run_dashboard(
    model: str,
    sae_dir: Path,
    out: Path,
    features: list[int] | None,
    top_n: int | None,
    corpus: str,
    texts: int,
    facts: Path | None,
    n_facts: int,
    contexts: int,
    device: str = "cpu",
) -> dict:
    """An HTML dashboard of `features` (or the `top_n` densest on the corpus sample) of the SAE in `sae_dir`:
    `out/index.html` and a page per feature, with the facts of the CounterFact-layout file `facts` each
    carries."""
    from editkit.corpus import open_corpus
    from editkit.evaluate import load_dataset
    from editkit.features.dashboard import build_dashboard, densest_features, write_dashboard
    from editkit.features.sae import SAE
    from editkit.models import load_model

    if (features is None) == (top_n is None):
        raise EditkitError("pass exactly one of --features 3,17,... and --top-n N")
    sae = SAE.load(sae_dir)
    for f in features or []:
        sae.check_feature(f)
    m, tok, adapter = load_model(model, device=device)
    sae = sae.to(m.device)
    sample = list(islice(open_corpus(corpus, m, tok).texts(), texts))
    chosen = features if features is not None else densest_features(m, tok, adapter, sae, sample, top_n)
    records = load_dataset("counterfact", facts, limit=n_facts) if facts is not None else []
    pages = build_dashboard(m, tok, adapter, sae, chosen, sample, records, contexts)
    path = write_dashboard(pages, Path(sae_dir).name, sae.cfg.hook_name, out)
    return {"out": str(path), "index": str(path / "index.html"), "features": chosen, "facts": len(records)}


def _finish_edit(m, tok, result, model: str, out: Path, checkpoint: Path | None) -> dict:
    """Save the edit (and the edited model as a plain transformers checkpoint) and describe it."""
    from editkit.edit.checkpoint import save_checkpoint

    result.model = model
    result.save(out)
    if checkpoint is not None:
        save_checkpoint(m, tok, checkpoint, result, source=model)
    return {"method": result.method, "hparams": result.hparams, "modules": result.modules, "out": str(out)}


def run_feature_ablate(
    model: str,
    sae_dir: Path,
    feature: int,
    layers: str | None,
    writer: str,
    out: Path,
    checkpoint: Path | None,
    device="cpu",
) -> dict:
    """Project a feature's direction out of what `writer` writes at `layers` (default: the SAE's layer)."""
    from editkit.features.feature_edit import ablate_feature
    from editkit.features.probes import parse_layers
    from editkit.features.sae import SAE
    from editkit.models import load_model

    sae = SAE.load(sae_dir)
    m, tok, adapter = load_model(model, device=device)
    layer_ids = parse_layers(layers, adapter.n_layers) if layers else None
    result = ablate_feature(m, adapter, sae.to(m.device), feature, layer_ids, writer)
    return _finish_edit(m, tok, result, model, out, checkpoint)


def run_feature_edit(
    model: str,
    sae_dir: Path,
    request,
    features: list[int] | None,
    n_features: int | None,
    out: Path,
    checkpoint: Path | None,
    device: str = "cpu",
    key_tokens: int = 100_000,
) -> dict:
    """The feature-conditioned rank-one edit of one request (with an SAE: `feature_rank_one_edit`, 128
    features by default; with a transcoder: `transcoder_edit` under the model's ROME hparams, 1 feature);
    reports the prediction before and after."""
    from editkit.features.sae import SAE
    from editkit.models import load_model, top_k

    sae = SAE.load(sae_dir)
    m, tok, adapter = load_model(model, device=device)
    before = top_k(m, tok, request.text, 1)[0].token
    if sae.cfg.is_transcoder:
        result = _transcoder_edit(model, m, tok, adapter, sae, request, features, n_features or 1, key_tokens)
    else:
        from editkit.features.feature_edit import feature_rank_one_edit

        result = feature_rank_one_edit(m, tok, adapter, sae, request, features, n_features or 128)
    data = _finish_edit(m, tok, result, model, out, checkpoint)
    return {**data, "before": before, "after": top_k(m, tok, request.text, 1)[0].token}


def _transcoder_edit(name: str, m, tok, adapter, transcoder, request, features, n_features: int, key_tokens: int):
    from editkit.corpus import open_corpus
    from editkit.edit import load_hparams
    from editkit.edit.run import make_stats
    from editkit.features.transcoder_edit import FeatureKeys, transcoder_edit

    hp = load_hparams("rome", name)
    texts = open_corpus(transcoder.cfg.dataset_path or hp.mom2_corpus, m, tok).texts()
    keys = FeatureKeys.compute(m, tok, adapter, transcoder.to(m.device), texts, key_tokens)
    stats = make_stats(m, tok, adapter, hp, progress=True)
    return transcoder_edit(m, tok, adapter, transcoder, [request], hp, stats, keys, n_features, features)
