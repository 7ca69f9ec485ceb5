"""Commands that score edits: eval, table, plot."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from editkit.cli.common import (
    DeviceOpt,
    JsonOpt,
    ModelArg,
    app,
    cli_errors,
    console,
    print_json,
)


@app.command("eval")
@cli_errors
def eval_cmd(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="Run directory: config.json, cases.jsonl, summary.json.")],
    method: Annotated[str, typer.Option(help="Edit method (`editkit methods`), or 'none' (unedited).")] = "none",
    dataset: Annotated[
        str | None, typer.Option(help="counterfact, multi_counterfact, zsre, easyedit, toy (default: toy for toy).")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Local dataset file (default: download by name).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use the first N records (after --offset).")] = None,
    offset: Annotated[int, typer.Option(min=0, help="Skip the first N records.")] = 0,
    sample: Annotated[int | None, typer.Option(min=1, help="Then draw N records at random (--seed).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for --sample and for sampled generations.")] = 0,
    distinct_subjects: Annotated[
        bool, typer.Option("--distinct-subjects", help="Only each subject's first record (for batch edits).")
    ] = False,
    known_only: Annotated[
        bool,
        typer.Option("--known-only", help="Only records whose true object the unedited model prefers to the new one."),
    ] = False,
    mode: Annotated[str, typer.Option(help="single, batch or sequential.")] = "single",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Edits applied at once.")] = 1,
    hparams: Annotated[Path | None, typer.Option(help="Hyper-parameter file (default: shipped).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    shard: Annotated[str, typer.Option(help="Evaluate shard i of n, written i/n.")] = "0/1",
    generation: Annotated[bool, typer.Option(help="Generation metrics GE and RS (CounterFact).")] = True,
    protocol: Annotated[
        str, typer.Option(help="teacher-forced (the papers' probabilities), generation (greedy answers) or both.")
    ] = "both",
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", min=1, help="Generation protocol: most tokens per answer.")
    ] = 20,
    checkpoints: Annotated[
        str | None, typer.Option(help="Sequential mode: evaluate all edits so far after these counts, e.g. 10,50,100.")
    ] = None,
    capability: Annotated[
        bool, typer.Option(help="Perplexity on held-out text and retention of untouched facts, before and after.")
    ] = True,
    capability_corpus: Annotated[
        str | None, typer.Option("--capability-corpus", help="Held-out texts (as editkit stats reads; toy: built in).")
    ] = None,
    capability_every: Annotated[
        int, typer.Option("--capability-every", min=1, help="Sequential mode: measure capability every N edits.")
    ] = 1,
    known_facts: Annotated[
        Path | None, typer.Option("--known-facts", help="known_1000-format facts to retain (toy: built in).")
    ] = None,
    snippets: Annotated[Path | None, typer.Option(help="ROME's attribute_snippets.json, for RS.")] = None,
    tfidf: Annotated[Path | None, typer.Option(help="Directory with ROME's idf.npy and tfidf_vocab.json.")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Edit and score a benchmark, one JSON line per case; resumable and shardable.

    Example: [bold]editkit eval toy --method none --dataset toy --limit 50 --out runs/toy-none[/]
    """
    from editkit.evaluate.runner import EvalConfig, parse_checkpoints, run_named
    from editkit.evaluate.tables import merge_runs, render
    from editkit.toy import default_dataset

    config = EvalConfig(
        model=model, dataset=dataset or default_dataset(model), method=method, data=str(data) if data else None,
        limit=limit, offset=offset, sample=sample, seed=seed, mode=mode, batch_size=batch_size, shard=shard,
        generation=generation, distinct_subjects=distinct_subjects, known_only=known_only, protocol=protocol,
        max_new_tokens=max_new_tokens,
        checkpoints=parse_checkpoints(checkpoints) if checkpoints else None, capability=capability,
        capability_corpus=capability_corpus, known_facts=str(known_facts) if known_facts else None,
        capability_every=capability_every,
    )  # fmt: skip
    summary = run_named(
        config, out, resume, device, str(hparams) if hparams else None,
        str(snippets) if snippets else None, str(tfidf) if tfidf else None, progress=not json_out,
    )  # fmt: skip
    if json_out:
        return print_json(summary)
    console.print(render(merge_runs([out]), "rich"))
    console.print(f"cases: {out / 'cases.jsonl'}  summary: {out / 'summary.json'}", highlight=False)


@app.command("table")
@cli_errors
def table_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run directories made by editkit eval (shards merge).")],
    fmt: Annotated[str, typer.Option("--format", help="rich, markdown, csv or latex.")] = "rich",
) -> None:
    """One row per run in the papers' layout (ROME Table 4, zsRE), mean ± 95% CI in percent.

    Example: [bold]editkit table runs/toy-none runs/toy-rome --format markdown[/]
    """
    from editkit.evaluate.tables import merge_runs, render

    table = render(merge_runs(runs), fmt)
    if fmt == "rich":
        return console.print(table)
    sys.stdout.write(table + "\n")


@app.command("plot")
@cli_errors
def plot_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Sequential run directories made with --checkpoints.")],
    out: Annotated[Path | None, typer.Option("--out", help="PNG or PDF (default: RUN_DIR/curves.png).")] = None,
) -> None:
    """Metric vs number of edits, one line per method, from sequential runs with checkpoints.

    Example: [bold]editkit plot runs/seq-rome runs/seq-memit --out curves.png[/]
    """
    from editkit.evaluate.plots import plot_curves

    console.print(f"wrote {plot_curves(runs, out)}", highlight=False)
