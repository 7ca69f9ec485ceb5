"""Commands that edit weights: edit, apply, revert, and the statistics they use (stats)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from editkit.cli.common import (
    DeviceOpt,
    JsonOpt,
    ModelArg,
    app,
    cli_errors,
    console,
    int_list,
    print_json,
)


def edit_table(data: dict) -> Table:
    """The before/after predictions of an edit's probes."""
    n = len(data.get("requests", [None]))
    mode = "single edit" if n == 1 else f"{data['mode']}, {n} edits"
    table = Table(title=f"{data['method']} ({mode}): before → after")
    for col in ("probe", "prompt", "top-1 before", "top-1 after", "p(new) before → after", "p(true) before → after"):
        table.add_column(col)
    for b, a in zip(data["before"], data["after"], strict=True):
        table.add_row(
            b["probe"],
            b["prompt"],
            f"{b['top'].strip()} {b['top_prob']:.2f}",
            f"{a['top'].strip()} {a['top_prob']:.2f}",
            f"{b.get('p_target_new', 0):.3f} → {a.get('p_target_new', 0):.3f}",
            f"{b['p_target_true']:.3f} → {a['p_target_true']:.3f}" if "p_target_true" in b else "",
        )
    return table


@app.command()
@cli_errors
def edit(
    model: ModelArg,
    method: Annotated[str, typer.Option(help="Edit method; `editkit methods` lists them.")] = "rome",
    prompt: Annotated[str | None, typer.Option(help="Prompt with {} where the subject goes.")] = None,
    subject: Annotated[str | None, typer.Option(help="The subject, filled into the prompt's {}.")] = None,
    target_new: Annotated[str | None, typer.Option("--target-new", help="The new answer.")] = None,
    target_true: Annotated[str | None, typer.Option("--target-true", help="The current answer (optional).")] = None,
    requests: Annotated[
        Path | None, typer.Option(help="JSON/JSONL of requests, or CounterFact, zsRE or EasyEdit records.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Take N records from --requests.")] = None,
    offset: Annotated[int, typer.Option(min=0, help="Skip K records of --requests.")] = 0,
    mode: Annotated[str, typer.Option(help="batch (all at once) or sequential (one after another).")] = "batch",
    hparams: Annotated[Path | None, typer.Option(help="Hyper-parameter YAML/JSON (default: shipped).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a hyper-parameter: key=value.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the edit (safetensors + JSON) to this directory.")] = None,
    save_checkpoint: Annotated[Path | None, typer.Option(help="Write the edited model here.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Statistics cache (default $EDITKIT_CACHE).")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Edit facts with a registered method (FT/FT-L, ROME/r-ROME, MEMIT, AlphaEdit, ...); show before/after
    predictions.

    Example: [bold]editkit edit toy --method rome --prompt "{} plays the" --subject "Tiboth Steleil"
             --target-new harp[/]
    """
    from editkit.edit.run import edit_requests, run_edit

    reqs, record = edit_requests(prompt, subject, target_new, target_true, requests, limit, offset)
    data = run_edit(
        model, reqs, method, mode=mode, hparams_file=hparams, overrides=tuple(set_ or ()), out=out,
        checkpoint=save_checkpoint, cache_dir=cache_dir, device=device, record=record, progress=not json_out,
    )  # fmt: skip
    if json_out:
        return print_json(data)
    console.print(edit_table(data))
    for key, what in (("edit_dir", "edit"), ("checkpoint", "checkpoint")):
        if data[key]:
            console.print(f"wrote {what} to {data[key]}")
    if data["note"]:
        console.print(data["note"])


@app.command()
@cli_errors
def methods(json_out: JsonOpt = False) -> None:
    """The registered edit methods: name, hyper-parameter class, presets, what each does.

    Example: [bold]editkit methods[/]
    """
    from editkit.edit.registry import describe

    data = describe()
    if json_out:
        return print_json(data)
    table = Table("method", "hparams", "presets", "summary")
    for m in data:
        table.add_row(m["name"], m["hparams"], ", ".join(f"{k}={v}" for k, v in m["presets"].items()), m["summary"])
    console.print(table)


@app.command("apply")
@cli_errors
def apply_cmd(
    model: ModelArg,
    edit_dir: Annotated[Path, typer.Argument(help="Directory written by `editkit edit --out`.")],
    save_checkpoint: Annotated[Path, typer.Option(help="Write the edited model here.")],
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Apply a saved edit to the model it was made on (refuses any other model) and save the result.

    Example: [bold]editkit apply toy runs/edit1 --save-checkpoint runs/toy-edited[/]
    """
    from editkit.edit.run import run_apply

    data = run_apply(model, edit_dir, save_checkpoint, device)
    if json_out:
        return print_json(data)
    console.print(f"applied {edit_dir} to {model} ({', '.join(data['modules'])}); wrote {save_checkpoint}")
    if data["note"]:
        console.print(data["note"])


@app.command()
@cli_errors
def revert(
    checkpoint: Annotated[Path, typer.Argument(help="An edited checkpoint (from --save-checkpoint).")],
    out: Annotated[Path, typer.Option(help="Write the restored model here.")],
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Undo an edit bit for bit: restore every touched weight of an edited checkpoint.

    Example: [bold]editkit revert runs/toy-edited --out runs/toy-restored[/]
    """
    from editkit.edit.run import run_revert

    data = run_revert(checkpoint, out, device)
    if json_out:
        return print_json(data)
    console.print(f"restored {', '.join(data['modules'])} of {checkpoint}; wrote {out}")


@app.command()
@cli_errors
def stats(
    model: ModelArg,
    layers: Annotated[str, typer.Option(help="Comma-separated layers, e.g. 13,14.")],
    corpus: Annotated[
        str,
        typer.Option(
            help="samples:N (N texts the model writes, cached), a .txt/.jsonl file, 'toy', or a datasets name."
        ),
    ] = "samples:2000",
    tokens: Annotated[int, typer.Option(min=1, help="How many tokens to accumulate over.")] = 100_000,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache directory (default $EDITKIT_CACHE).")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Second-moment statistics C = E[k kᵀ] of the MLP output projections' inputs, cached for editing.

    Example: [bold]editkit stats toy --layers 1,2 --tokens 50000[/]
    """
    from editkit.edit.run import run_stats

    data = run_stats(model, int_list(layers, "--layers"), corpus, tokens, cache_dir, device, not json_out)
    if json_out:
        return print_json(data)
    table = Table(title=f"C = E[kkᵀ] of {model} over {tokens:,} tokens of {corpus}")
    for col in ("layer", "dim", "trace", "cache file"):
        table.add_column(col)
    for layer, row in data["layers"].items():
        table.add_row(layer, str(row["dim"]), f"{row['trace']:.4g}", row["cache"])
    console.print(table)
