"""The showcase on the toy model (`editkit demo`) in one place, and `editkit world check`; what each step computes
is in `editkit.demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from editkit.cli.common import (
    DeviceOpt,
    JsonOpt,
    app,
    cli_errors,
    console,
    print_json,
    status,
    world_app,
)


@world_app.command("check")
@cli_errors
def world_check(
    model: Annotated[str, typer.Option(help="Model to check.")] = "toy",
    world: Annotated[Path | None, typer.Option(help="world.json (default: the toy world's).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Check only the first N facts.")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Recall of a model on the world's training templates and on the paraphrases of the unseen half.

    Example: [bold]editkit world check --json[/]
    """
    from editkit.models import load_model, toy_dir
    from editkit.toy.world import World, measure_recall

    w = World.load(world or toy_dir() / "world.json")
    m, tok, _ = load_model(model, device=device)
    facts = w.facts[:limit] if limit else w.facts
    with status(f"scoring {len(facts)} facts", json_out):
        rec = measure_recall(m, tok, w, facts=facts)
    if json_out:
        return print_json(rec)
    table = Table(title=f"recall of {model} on {len(facts)} facts")
    table.add_column("templates")
    table.add_column("top-1 recall", justify="right")
    table.add_row("training templates (all facts)", f"{rec['train_recall']:.1%}")
    table.add_row("paraphrases (unseen half)", f"{rec['heldout_recall']:.1%}")
    console.print(table)


@app.command()
@cli_errors
def demo(
    seed: Annotated[int, typer.Option(help="Which facts to show.")] = 0,
    out: Annotated[Path, typer.Option(help="Directory for the demo's files (heatmap, ...).")] = Path("editkit-demo"),
) -> None:
    """The showcase on the shipped toy model: what it believes, how well it recalls, where a fact lives.

    Example: [bold]editkit demo[/]
    """
    from editkit.demo import beliefs, demo_facts, load_toy_world, recall_sample, trace_belief
    from editkit.locate.plots import plot_trace, rich_grid
    from editkit.models import load_model

    with status("loading the toy model and reading its beliefs"):
        model, tok, a = load_model("toy", device="cpu")
        world = load_toy_world()
        shown = beliefs(model, tok, world, demo_facts(world, seed))
        rec = recall_sample(model, tok, world, seed=seed)
    console.print(
        f"[bold]1. What the toy model believes[/] ({a.family}, {a.n_layers} layers, width {a.hidden_size})", markup=True
    )
    table = Table(title="facts of subjects never shown with the paraphrase templates")
    for col in ("relation", "prompt", "top-3 predictions", "true", "paraphrase → top-1"):
        table.add_column(col)
    for b in shown:
        tops = ", ".join(f"{p.token.strip()} {p.prob:.2f}" for p in b.top)
        table.add_row(
            b.relation,
            b.prompt,
            Text.assemble(_mark(b.correct), f" {tops}"),
            b.fact.object,
            Text.assemble(f"{b.paraphrase} → ", _mark(b.paraphrase_correct), f" {b.paraphrase_top[0].token.strip()}"),
        )
    console.print(table)
    console.print(
        f"Top-1 recall on 200 sampled facts: training templates [bold]{rec['train_recall']:.1%}[/], "
        f"unseen paraphrases [bold]{rec['heldout_recall']:.1%}[/]\n",
        markup=True,
    )

    first = shown[0]
    console.print(
        f"[bold]2. Where is it stored?[/] Causal trace of {escape(repr(first.prompt))} → {escape(first.fact.object)}",
        markup=True,
    )
    with status("tracing"):
        result = trace_belief(model, tok, a, first, world)
    console.print(f"clean p = {result.clean_score:.3f}, subject noised p = {result.corrupted_score:.3f}")
    console.print(rich_grid(result, "hidden"))
    for k in result.scores:
        t, layer, score = result.peak(k)
        console.print(f"  restoring {k:6s}: peak at token {result.tokens[t]!r}, layer {layer} (p = {score:.3f})")
    console.print(f"heatmap: {plot_trace(result, out / 'trace.png')}\n")
    _demo_features_step(model, tok, a, first, world)
    _demo_edit_step(model, tok, a, first, world, out)
    _demo_eval_step((model, tok, a), out)
    template = first.prompt.replace(first.fact.subject, "{}")
    console.print(
        f'Try: [bold]editkit predict toy "{escape(template)}" --subject "{escape(first.fact.subject)}"[/]',
        highlight=False,
        markup=True,
    )


def _demo_features_step(model, tok, adapter, belief, world, top: int = 5) -> None:
    """Demo step: which features of the shipped toy SAE carry the traced fact, verified by ablating them."""
    from editkit.demo import demo_features

    sae, alt, r = demo_features(model, tok, adapter, belief, world, top)
    obj = belief.fact.object
    console.print(
        f"[bold]Which SAE features carry it?[/] {escape(sae.cfg.hook_name)}, {sae.cfg.d_sae} features, "
        f"logit({escape(obj)}) − logit({escape(alt)})",
        markup=True,
    )
    table = Table()
    for col in ("feature", "token", "activation", "activation × gradient", "measured Δ when ablated"):
        table.add_column(col, justify="left" if col == "token" else "right")
    for f in r.features:
        table.add_row(
            str(f.feature), repr(f.token), f"{f.activation:.2f}", f"{f.attribution:+.3f}", f"{f.ablation:+.3f}"
        )
    console.print(table)
    console.print(
        f"logit difference {r.metric:.2f}; inspect one: editkit features show toy "
        f"data/toy/sae-blocks.3.hook_resid_post {r.features[0].feature}\n",
        highlight=False,
    )


def _demo_edit_step(model, tok, adapter, belief, world, out: Path) -> None:
    """Demo step 3: a ROME edit of the traced fact, its before/after table, and the checkpoint reloaded."""
    from editkit.cli.edit import edit_table
    from editkit.demo import demo_edit

    console.print(
        f"[bold]3. Change it.[/] ROME rewrites {escape(repr(belief.prompt))} (shipped toy hparams)", markup=True
    )
    data = demo_edit(model, tok, adapter, belief.prompt, belief.fact.subject, belief.fact.object, world, out)
    console.print(edit_table({"method": "rome", "mode": "single edit", **data}))
    if not data["request"].target_new.startswith(data["after"][0]["top"].strip() or "\0"):
        console.print("[yellow]not flipped:[/] the new target is not the top prediction after the edit", markup=True)
    console.print(
        f"checkpoint: {data['checkpoint']} (plain transformers, fresh interpreter, predicts "
        f"{data['reloaded_top1']!r}; target {data['request'].target_new!r}); the demo's model is reverted\n"
    )


def _demo_eval_step(bundle, out: Path, n: int = 20) -> None:
    """The demo's last step: unedited vs one MEMIT batch of the first `n` toy CounterFact records of distinct
    subjects, as a table (one batch: a fourth of the time of `n` ROME edits, issue 14)."""
    from editkit.demo import demo_eval
    from editkit.evaluate import merge_runs, render

    console.print(
        f"[bold]4. How good is the edit?[/] Unedited vs MEMIT, one batch of {n} CounterFact records of the toy world",
        markup=True,
    )
    with status(f"editing {n} facts at once and scoring them"):
        dirs = demo_eval(bundle, out, n)
    console.print(render(merge_runs(dirs), "rich"))
    console.print(
        f"cases: {escape(str(out / 'eval'))}; one ROME edit per record: "
        "[bold]editkit eval toy --method rome --limit 200 --out r[/]\n",
        markup=True,
    )


def _mark(ok: bool) -> Text:
    return Text("✓", style="green") if ok else Text("✗", style="red")
