"""Commands on SAE features: sae train/eval, features attribute/show/ablate/edit, steer, probe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from editkit.cli.common import (
    AlsoCheckpointOpt,
    CorpusOpt,
    DeviceOpt,
    EditOutOpt,
    JsonOpt,
    ModelArg,
    SaeDirArg,
    app,
    cli_errors,
    console,
    features_app,
    int_list,
    print_json,
    sae_app,
)
from editkit.features.saes import names as sae_architectures


def _sae_eval_table(title: str, ev: dict) -> Table:
    table = Table(title=title, show_header=False)
    if ev.get("hook_name_out"):
        table.add_row("transcoder", f"{ev['hook_name']} → {ev['hook_name_out']}")
    keys = ("n_tokens", "l0", "explained_variance", "dead_fraction", "dense_fraction", "shrinkage", "ce_clean")
    for key in (*keys, "ce_sae", "ce_zero"):
        table.add_row(key, f"{ev[key]:,}" if isinstance(ev[key], int) else f"{ev[key]:.4f}")
    table.add_row("ce_loss_recovered", f"{ev['ce_loss_recovered']:.1%}")
    return table


@sae_app.command("train")
@cli_errors
def sae_train(
    model: ModelArg,
    hook: Annotated[str, typer.Option("--hook", "--hook-in", help="SAELens hook name, e.g. blocks.3.hook_resid_post.")],
    out: Annotated[Path, typer.Option(help="Write the SAE directory here.")],
    d_sae: Annotated[int, typer.Option("--d-sae", min=1, help="Number of features.")],
    corpus: CorpusOpt = "toy",
    arch: Annotated[str, typer.Option(help=f"SAE architecture: {', '.join(sae_architectures())}.")] = "standard",
    k: Annotated[
        int | None, typer.Option(help="Active features per token (topk; on average: batchtopk, matryoshka).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens of activations to cache.")] = 200_000,
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(min=1, help="Activations per step.")] = 1024,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    l1: Annotated[float, typer.Option(help="L1 coefficient (standard, gated).")] = 5.0,
    l0: Annotated[float, typer.Option(help="L0 coefficient (jumprelu).")] = 1.0,
    aux_k: Annotated[float, typer.Option(help="Auxiliary-k loss coefficient (topk, batchtopk, matryoshka).")] = 1 / 32,
    widths: Annotated[str | None, typer.Option(help="Nested prefix widths, e.g. 64,128,256 (matryoshka).")] = None,
    normalize: Annotated[bool, typer.Option(help="Scale inputs to mean norm √d_in while training.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and batch order.")] = 0,
    store: Annotated[Path | None, typer.Option(help="Activation store (HDF5; resumed if it exists).")] = None,
    prepend_bos: Annotated[
        bool, typer.Option(help="Put the tokenizer's BOS first on every text (recorded as prepend_bos in cfg.json).")
    ] = False,
    hook_out: Annotated[
        str | None,
        typer.Option(help="Train a transcoder predicting this hook from --hook-in, e.g. blocks.0.hook_mlp_out."),
    ] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Cache a hook point's activations over a corpus, train an SAE on them, save it and its evaluation.

    Example: [bold]editkit sae train toy --hook blocks.3.hook_resid_post --d-sae 1024 --arch topk --k 16 --out sae[/]
    (batchtopk and matryoshka are saved for inference as jumprelu, as SAELens saves them).
    A transcoder: [bold]--hook-in blocks.0.ln2.hook_normalized --hook-out blocks.0.hook_mlp_out[/]
    """
    from editkit.features.run import run_sae_train

    matryoshka_widths = int_list(widths, "--widths") if widths else None

    data = run_sae_train(
        model,
        hook,
        corpus,
        out,
        d_sae,
        arch,
        k,
        max_tokens,
        store,
        device=device,
        progress=not json_out,
        hook_out=hook_out,
        training_steps=steps,
        batch_size=batch_size,
        lr=lr,
        l1_coefficient=l1,
        l0_coefficient=l0,
        aux_k_coefficient=aux_k,
        matryoshka_widths=matryoshka_widths,
        seed=seed,
        prepend_bos=prepend_bos,
        lr_decay_steps=steps // 5,
        normalize_activations="expected_average_only_in" if normalize else "none",
    )
    if json_out:
        return print_json(data)
    console.print(f"wrote {data['sae']} (trained on {data['tokens']:,} tokens cached in {data['store']})")
    if "eval" in data:
        console.print(_sae_eval_table(f"{hook} on held-out {model} text", data["eval"]))


@sae_app.command("eval")
@cli_errors
def sae_eval(
    model: ModelArg,
    sae_dir: SaeDirArg,
    corpus: CorpusOpt = "toy",
    texts: Annotated[int, typer.Option(min=1, help="How many texts to evaluate on.")] = 500,
    skip: Annotated[int, typer.Option(min=0, help="Skip this many texts first (e.g. those trained on).")] = 0,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """L0, explained variance, dead features and CE loss recovered of an SAE spliced into its model.

    Example: [bold]editkit sae eval toy data/toy/sae-blocks.3.hook_resid_post --skip 20000[/]
    """
    from editkit.features.run import run_sae_eval

    data = run_sae_eval(model, sae_dir, corpus, texts, skip, device)
    if json_out:
        return print_json(data)
    console.print(_sae_eval_table(f"{sae_dir} on {model}", data))


@features_app.command("attribute")
@cli_errors
def features_attribute(
    model: ModelArg,
    sae_dir: SaeDirArg,
    prompt: Annotated[str, typer.Option(help="The prompt (or a template with {} and --subject).")],
    subject: Annotated[str | None, typer.Option(help="The subject, as it appears in the prompt.")] = None,
    target: Annotated[str | None, typer.Option(help="The answer to attribute (default: the top prediction).")] = None,
    target_alt: Annotated[str | None, typer.Option(help="Attribute logit(target) − logit(this) instead.")] = None,
    counterfactual_subject: Annotated[
        str | None, typer.Option(help="Also patch each top feature from the prompt with this subject.")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="How many (feature, position) pairs to report and verify.")] = 10,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Score SAE features by activation × gradient for an answer, then verify the top ones by ablating them.

    Example: [bold]editkit features attribute toy data/toy/sae-blocks.3.hook_resid_post --prompt "{} plays the"
             --subject "Tiboth Steleil"[/]
    """
    from editkit.features.run import run_attribute

    data = run_attribute(model, sae_dir, prompt, subject, target, target_alt, counterfactual_subject, top, device)
    if json_out:
        return print_json(data)
    table = Table(title=f"{data['metric_name']} = {data['metric']:.3f} at {data['hook_name']}")
    for col in ("feature", "position", "token", "activation", "attribution", "ablation Δ", "patch Δ"):
        table.add_column(col, justify="right" if col != "token" else "left")
    for s in data["features"]:
        fmt = lambda v: "" if v is None else f"{v:+.3f}"  # noqa: E731
        table.add_row(
            str(s["feature"]),
            str(s["position"]),
            repr(s["token"]),
            f"{s['activation']:.2f}",
            fmt(s["attribution"]),
            fmt(s["ablation"]),
            fmt(s["patch"]),
        )
    console.print(table)
    if data["target_alt"] is None and data["metric"] > -0.01:
        console.print("note: log p is saturated (p ≈ 1) and its gradients are small; pass --target-alt")


@features_app.command("show")
@cli_errors
def features_show(
    model: ModelArg,
    sae_dir: SaeDirArg,
    feature: Annotated[int, typer.Argument(help="The feature index.")],
    corpus: CorpusOpt = "toy",
    texts: Annotated[int, typer.Option(min=1, help="How many corpus texts to scan.")] = 2000,
    top: Annotated[int, typer.Option(min=1, help="How many contexts to show.")] = 10,
    html: Annotated[Path | None, typer.Option(help="Also write an HTML report (histogram, examples).")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """A feature's top-activating corpus contexts and the tokens its direction promotes (logit lens).

    Example: [bold]editkit features show toy data/toy/sae-blocks.3.hook_resid_post 12 --html feature12.html[/]
    """
    from editkit.features.run import run_show

    data = run_show(model, sae_dir, feature, corpus, texts, top, html, device)
    if json_out:
        return print_json(data)
    console.print(
        f"[bold]feature {feature}[/] at {escape(data['hook_name'])}: active on {data['density']:.2%} of tokens",
        markup=True,
    )
    for c in data["contexts"]:
        text = "".join(
            f"[bold reverse]{escape(t)}[/]" if i == c["position"] else escape(t) for i, t in enumerate(c["tokens"])
        )
        console.print(f"{c['activation']:8.2f}  {text}", highlight=False, markup=True)
    lens = lambda items: ", ".join(f"{t!r} {v:+.2f}" for t, v in items)  # noqa: E731
    console.print(f"[bold]promotes:[/]   {escape(lens(data['promoted']))}", highlight=False, markup=True)
    console.print(f"[bold]suppresses:[/] {escape(lens(data['suppressed']))}", highlight=False, markup=True)
    if html is not None:
        console.print(f"wrote {html}")


@features_app.command("dashboard")
@cli_errors
def features_dashboard(
    model: ModelArg,
    sae_dir: SaeDirArg,
    out: Annotated[Path, typer.Option(help="Directory for index.html and one feature-<i>.html per feature.")],
    features: Annotated[str | None, typer.Option(help="Comma-separated features, e.g. 3,17,40.")] = None,
    top_n: Annotated[
        int | None, typer.Option("--top-n", min=1, help="Instead: the N features active on most corpus tokens.")
    ] = None,
    corpus: CorpusOpt = "toy",
    texts: Annotated[int, typer.Option(min=1, help="How many corpus texts to scan.")] = 2000,
    facts: Annotated[
        Path | None, typer.Option(help="CounterFact-layout facts to attribute (e.g. data/toy/counterfact.json).")
    ] = None,
    n_facts: Annotated[int, typer.Option("--n-facts", min=1, help="How many of --facts to attribute.")] = 50,
    contexts: Annotated[int, typer.Option(min=1, help="Top-activating contexts per feature.")] = 10,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Static HTML pages over many features: top contexts, histogram, logit lens, the facts each carries.

    Example: [bold]editkit features dashboard toy data/toy/sae-blocks.0.hook_resid_post --top-n 20
             --facts data/toy/counterfact.json --out dash[/]
    """
    from editkit.features.run import run_dashboard

    ids = int_list(features, "--features") if features is not None else None
    data = run_dashboard(model, sae_dir, out, ids, top_n, corpus, texts, facts, n_facts, contexts, device)
    if json_out:
        return print_json(data)
    console.print(f"{len(data['features'])} feature pages, {data['facts']} facts attributed: {data['index']}")


@features_app.command("ablate")
@cli_errors
def features_ablate(
    model: ModelArg,
    sae_dir: SaeDirArg,
    feature: Annotated[int, typer.Argument(help="The feature whose direction to remove.")],
    out: EditOutOpt,
    layers: Annotated[str | None, typer.Option(help="Comma-separated layers (default: the SAE's layer).")] = None,
    writer: Annotated[str, typer.Option(help="mlp or attn: whose output projection to edit.")] = "mlp",
    save_checkpoint: AlsoCheckpointOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Remove a feature's decoder direction from what a layer writes, in the weights (revertible).

    Example: [bold]editkit features ablate toy data/toy/sae-blocks.3.hook_resid_post 307 --out runs/ablate-307[/]
    """
    from editkit.features.run import run_feature_ablate

    data = run_feature_ablate(model, sae_dir, feature, layers, writer, out, save_checkpoint, device)
    if json_out:
        return print_json(data)
    console.print(f"removed feature {feature} from {', '.join(data['modules'])}; wrote {data['out']}")


@features_app.command("edit")
@cli_errors
def features_edit(
    model: ModelArg,
    sae_dir: SaeDirArg,
    prompt: Annotated[str, typer.Option(help="Template with {} for the subject.")],
    subject: Annotated[str, typer.Option(help="The subject.")],
    target_new: Annotated[str, typer.Option(help="The new answer.")],
    out: EditOutOpt,
    target_true: Annotated[str | None, typer.Option(help="The current answer (recorded).")] = None,
    features: Annotated[str | None, typer.Option(help="Comma-separated features (default: chosen).")] = None,
    n_features: Annotated[
        int | None,
        typer.Option(min=1, help="Features to choose (default: 128 of an SAE, 1 of a transcoder)."),
    ] = None,
    save_checkpoint: AlsoCheckpointOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Feature-conditioned rank-one edit: change a fact through SAE feature directions, in the weights.
    Given a transcoder, the transcoder feature edit: ROME keyed on the features active at the subject.

    Example: [bold]editkit features edit toy data/toy/sae-blocks.3.hook_resid_post --prompt "{} plays the"
             --subject "Tiboth Steleil" --target-new harp --out runs/fedit[/]
    (or data/toy/transcoder-blocks.0 in place of the SAE)
    """
    from editkit.features.run import run_feature_edit
    from editkit.requests import EditRequest

    ids = int_list(features, "--features") if features else None
    request = EditRequest(prompt, subject, target_new, target_true)
    data = run_feature_edit(model, sae_dir, request, ids, n_features, out, save_checkpoint, device)
    if json_out:
        return print_json(data)
    how = (
        f"scale {data['hparams']['scale']:.3g}"
        if "scale" in data["hparams"]
        else f"features {data['hparams']['features'][0]}"
    )
    console.print(f"{request.text}: {data['before']!r} → {data['after']!r} ({how})")
    console.print(f"wrote {data['out']}")


@app.command()
@cli_errors
def steer(
    model: ModelArg,
    sae_dir: SaeDirArg,
    feature: Annotated[int, typer.Option(help="The SAE feature to steer with.")],
    prompt: Annotated[str, typer.Option(help="The prompt to continue.")],
    clamp: Annotated[str | None, typer.Option(help="Clamp the feature to V, or to m × its corpus max ('5x').")] = None,
    add: Annotated[float | None, typer.Option(help="Add A × the feature's decoder direction.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Greedy tokens to generate.")] = 40,
    corpus: Annotated[
        str | None, typer.Option(help="Corpus for --clamp's 'm x' maximum (default: the SAE's training corpus).")
    ] = None,
    texts: Annotated[int, typer.Option(min=1, help="How many corpus texts --clamp's maximum is taken over.")] = 2000,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Generate without and with a feature clamped or added at every position.

    Example: [bold]editkit steer toy data/toy/sae-blocks.3.hook_resid_post --feature 12 --clamp 5x
             --prompt "Tiboth Steleil plays the"[/]
    """
    from editkit.features.run import run_steer

    data = run_steer(
        model, sae_dir, prompt, feature, clamp, add, max_new_tokens, device, corpus, texts, fallback_corpus="toy"
    )
    if json_out:
        return print_json(data)
    table = Table(title=f"{data['prompt']} …", title_justify="left")
    table.add_column("without steering")
    table.add_column(f"feature {data['feature']}: {data['mode']} {data['value']:.3g}")
    table.add_row(data["baseline"], data["steered"])
    console.print(table)


@app.command()
@cli_errors
def probe(
    model: ModelArg,
    dataset: Annotated[str, typer.Argument(help="'toy' (the toy world's facts) or a JSON/JSONL file of records.")],
    label: Annotated[str, typer.Option(help="The record field to predict, e.g. object.")],
    out: Annotated[Path, typer.Option(help="Write probe.json, probes.safetensors and accuracy.png here.")],
    position: Annotated[str, typer.Option(help="last_subject or last.")] = "last_subject",
    layers: Annotated[str, typer.Option(help="'all' or comma-separated layers.")] = "all",
    relation: Annotated[str | None, typer.Option(help="Toy world relation (default P1303).")] = None,
    folds: Annotated[int, typer.Option(min=2, help="Stratified cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of folds and the shuffled control.")] = 0,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Linear probes per layer: cross-validated accuracy vs. majority class and a shuffled-label control.

    Example: [bold]editkit probe toy toy --label object --position last --out runs/probe[/]
    """
    from editkit.features.run import run_probe_cmd

    data = run_probe_cmd(model, dataset, label, out, position, layers, relation, folds, seed, device)
    if json_out:
        return print_json(data)
    table = Table(title=f"probe for {label!r} at {position} (n={data['n']}, majority {data['majority']:.1%})")
    for col in ("layer", "accuracy", "control (shuffled)"):
        table.add_column(col, justify="right")
    for i, layer in enumerate(data["layers"]):
        table.add_row(
            str(layer),
            f"{data['accuracy'][i]:.1%} ± {data['accuracy_std'][i]:.1%}",
            f"{data['control'][i]:.1%} ± {data['control_std'][i]:.1%}",
        )
    console.print(table)
    console.print(f"wrote {data['out']}")
