"""Commands that locate facts: trace, trace-dataset, known, neurons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from editkit.cli.common import (
    DeviceOpt,
    JsonOpt,
    KindOpt,
    ModelArg,
    NoiseOpt,
    SamplesOpt,
    WindowOpt,
    app,
    cli_errors,
    console,
    print_json,
    status,
)


@app.command("trace")
@cli_errors
def trace_cmd(
    model: ModelArg,
    prompt: Annotated[str, typer.Option(help="The prompt (ends before the answer), or a template with {}.")],
    subject: Annotated[str, typer.Option(help="The subject, as it appears in the prompt; its embeddings are noised.")],
    target: Annotated[str | None, typer.Option(help="Answer to score (default: the clean top-1 token).")] = None,
    kind: KindOpt = "all",
    window: WindowOpt = None,
    noise: NoiseOpt = "s3",
    samples: SamplesOpt = 10,
    seed: Annotated[int, typer.Option(help="Seed of the noise (RandomState, as the reference code).")] = 1,
    method: Annotated[str, typer.Option(help="fast (exact), naive (reference loop), or attribution.")] = "fast",
    sever: Annotated[str | None, typer.Option(help="Freeze later mlp or attn outputs (hidden kind only).")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for trace.npz and the heatmap.")] = None,
    image_format: Annotated[str, typer.Option("--format", help="png or pdf.")] = "png",
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Causal tracing: restore clean states into a noised run and see where the answer comes back.

    Example: [bold]editkit trace toy --prompt "Tiboth Steleil plays the" --subject "Tiboth Steleil" --out runs/t1[/]
    """
    from editkit.locate.plots import rich_grid
    from editkit.locate.run import run_trace
    from editkit.toy import is_toy
    from editkit.toy.sources import noise_subjects

    with status("tracing", json_out):
        result, paths = run_trace(
            model, prompt, subject, noise_subjects() if is_toy(model) else None, kind, sever, out, image_format,
            device, target=target, window=window, noise=noise, samples=samples, seed=seed, method=method,
        )  # fmt: skip
    if json_out:
        return print_json(result.to_json())
    console.print(
        f"answer {result.answer.strip()!r}: clean p = {result.clean_score:.4f}, "
        f"corrupted p = {result.corrupted_score:.4f} (noise {result.noise:.4f}, {result.samples} samples)"
    )
    for k in result.scores:
        console.print(rich_grid(result, k))
        t, layer, score = result.peak(k)
        console.print(f"  peak {k}: token {t} {result.tokens[t]!r}, layer {layer}, p = {score:.4f}")
    for p in paths:
        console.print(f"wrote {p}")


@app.command("trace-dataset")
@cli_errors
def trace_dataset_cmd(
    model: ModelArg,
    dataset: Annotated[str, typer.Argument(help="'toy', or a known_1000 / CounterFact JSON file.")],
    out: Annotated[Path, typer.Option(help="Run directory: traces.h5, aie.json, aie.png.")],
    limit: Annotated[int | None, typer.Option(min=1, help="Trace only the first N records.")] = None,
    kind: KindOpt = "all",
    window: WindowOpt = None,
    noise: NoiseOpt = "s3",
    samples: SamplesOpt = 10,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = 1,
    shard: Annotated[
        str, typer.Option(help="Trace shard i of n (every n-th fact), written i/n; the shards in OUT average together.")
    ] = "0/1",
    device: DeviceOpt = "cpu",
) -> None:
    """Average indirect effect over a dataset (the paper's Figure 2); resumes an interrupted run in OUT.

    Example: [bold]editkit trace-dataset toy toy --limit 200 --out runs/aie[/]
    """
    from editkit.locate.dataset import BUCKETS
    from editkit.locate.run import run_trace_dataset

    data = run_trace_dataset(
        model, dataset, out, limit, kind, device, shard=shard, window=window, noise=noise, samples=samples, seed=seed
    )
    counts, aie = data["counts"], data["aie"]
    console.print(
        f"traced {counts['traced']} facts the model knows ({counts['skipped_wrong']} skipped as wrong, "
        f"{counts['resumed']} resumed); clean p = {aie.clean:.3f}, corrupted p = {aie.corrupted:.3f}"
    )
    table = Table(title="peak layer of the average indirect effect")
    table.add_column("kind")
    for b in (BUCKETS[2], BUCKETS[5]):
        table.add_column(b, justify="right")
    for k, peaks in aie.peaks().items():
        table.add_row(
            k, *(f"{peaks[b]} (AIE {aie.mean[k][i][peaks[b]]:.3f})" for i, b in ((2, BUCKETS[2]), (5, BUCKETS[5])))
        )
    console.print(table)
    console.print(f"wrote {', '.join(map(str, data['files']))}")


@app.command()
@cli_errors
def known(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="JSON file of the records the model knows (the input's layout).")],
    dataset: Annotated[str, typer.Option(help="known_1000, counterfact, easyedit or toy.")] = "known_1000",
    data: Annotated[Path | None, typer.Option(help="Local dataset file (default: by name).")] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Keep the facts the model completes correctly (greedy continuation starts with the true object), as
    ROME built known_1000; the output is read by trace-dataset and eval.

    Example: [bold]editkit known smollm2-135m --out runs/known-smollm2.json[/]
    """
    from editkit.evaluate.known import known_facts
    from editkit.io import atomic_write_text
    from editkit.models import load_model

    m, tok, _ = load_model(model, device=device)
    kept, total = known_facts(m, tok, dataset, data)
    atomic_write_text(out, json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
    console.print(f"{len(kept)} of {total} records known ({100 * len(kept) / max(total, 1):.1f}%); wrote {out}")


@app.command()
@cli_errors
def neurons(
    model: ModelArg,
    prompt: Annotated[list[str], typer.Option(help="A prompt for the fact; repeat for paraphrases.")],
    target: Annotated[str, typer.Option(help="The answer whose neurons to find.")],
    steps: Annotated[int, typer.Option(min=1, help="Integrated-gradient steps.")] = 20,
    threshold: Annotated[float, typer.Option(help="Keep neurons above this fraction of the maximum.")] = 0.2,
    share: Annotated[float, typer.Option(help="Keep neurons found in at least this fraction of prompts.")] = 0.5,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Knowledge neurons (integrated gradients over MLP activations), checked by suppressing and amplifying them.

    Example: [bold]editkit neurons toy --prompt "Tiboth Steleil plays the" --prompt "On stage, Tiboth Steleil plays the"
             --target violin[/]
    """
    from editkit.locate.neurons import knowledge_neurons
    from editkit.models import load_model

    m, tok, a = load_model(model, device=device)
    with status("integrated gradients", json_out):
        r = knowledge_neurons(m, tok, a, prompt, target, steps=steps, threshold=threshold, share=share)
    if json_out:
        return print_json(r.to_json())
    table = Table(title=f"{len(r.neurons)} knowledge neurons for {target!r}")
    for col in ("prompt", "p(target)", "suppressed (×0)", "amplified (×2)"):
        table.add_column(col, justify="left" if col == "prompt" else "right")
    for p, b, s_, a_ in zip(r.prompts, r.base_probs, r.suppressed_probs, r.amplified_probs, strict=True):
        table.add_row(p, f"{b:.4f}", f"{s_:.4f}", f"{a_:.4f}")
    console.print(table)
    console.print(f"neurons (layer, index): {r.neurons[:20]}{' …' if len(r.neurons) > 20 else ''}")
    console.print(
        f"mean relative change of p(target): suppressed {r.suppress_change:+.1%}, amplified {r.amplify_change:+.1%}"
    )
