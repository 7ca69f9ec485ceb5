"""What every command group shares: the app and its sub-apps, the console, the option definitions, one-line
errors, JSON output."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from editkit.errors import EditkitError

try:  # typer >= 0.20 carries its own copy of click
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click


class _OneLineUsageErrors(TyperGroup):
    """Usage errors (a missing argument, a bad option value) as one line on stderr, status 2, like every other
    error; help (also for a bare group) prints as usual."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            where = getattr(getattr(e, "ctx", None), "command_path", None)
            hint = f" (see {where} --help)" if where else ""
            Console(stderr=True).print(
                Text.assemble(("error:", "bold red"), f" {e.format_message()}{hint}"), highlight=False, soft_wrap=True
            )
            sys.exit(e.exit_code)
        except typer.Abort:
            Console(stderr=True).print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_OneLineUsageErrors,
    help="editkit: find where a language model stores a fact, and change it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# the command groups, in the order `editkit --help` lists them
world_app = typer.Typer(help="The toy knowledge world: check what the toy model knows.", no_args_is_help=True)
app.add_typer(world_app, name="world")
models_app = typer.Typer(help="Named real models: list them, fetch one for offline use.", no_args_is_help=True)
app.add_typer(models_app, name="models")
sae_app = typer.Typer(help="Sparse autoencoders (SAELens format): train on a hook, evaluate.", no_args_is_help=True)
app.add_typer(sae_app, name="sae")
features_app = typer.Typer(help="SAE features of a fact: attribute, inspect.", no_args_is_help=True)
app.add_typer(features_app, name="features")

#: Markup off: user text (prompts, paths, tokens) prints as written; lines with markup of their own pass
#: markup=True and escape what the user gave.
console = Console(markup=False)
_state = {"debug": False}

ModelArg = Annotated[
    str, typer.Argument(help="Model directory, .gguf file, hub id, 'toy', or a named model (editkit models list).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, mps, or auto.")]
SaeDirArg = Annotated[Path, typer.Argument(help="An SAE directory (cfg.json + sae_weights.safetensors).")]
CorpusOpt = Annotated[str, typer.Option(help="'toy', a .txt/.jsonl file, or a datasets name.")]
KindOpt = Annotated[str, typer.Option(help="hidden, mlp, attn, or all.")]
WindowOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Layers restored together for mlp/attn (default: a fifth of the depth, ≤ 10)."),
]
NoiseOpt = Annotated[str, typer.Option(help="s3 (3 × embedding std), a float, uniform, or u<float>.")]
SamplesOpt = Annotated[int, typer.Option(min=1, help="Noised runs averaged per restoration.")]
EditOutOpt = Annotated[Path, typer.Option(help="Write the edit (edit.json + deltas.safetensors) here.")]
AlsoCheckpointOpt = Annotated[Path | None, typer.Option(help="Also write the edited model here.")]


def cli_errors(fn):
    """Turn an EditkitError into one line on stderr and exit status 2 (a traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EditkitError as e:
            if _state["debug"]:
                raise
            Console(stderr=True).print(Text.assemble(("error:", "bold red"), f" {e}"), highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


@app.callback()
@cli_errors
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    threads: Annotated[
        int | None,
        typer.Option(help="Torch threads (default: $EDITKIT_THREADS, else the cores not busy with other work)."),
    ] = None,
) -> None:
    """editkit: locate facts in language models (causal tracing, SAEs) and edit them (ROME, MEMIT, AlphaEdit)."""
    from editkit.threads import set_threads

    _state["debug"] = debug
    set_threads(threads)


def print_json(obj) -> None:
    """`obj` as JSON on stdout (NaN as null)."""
    from editkit.io import json_safe

    sys.stdout.write(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def status(what: str, quiet: bool = False):
    """A spinner with `what` while a step runs (nothing when `quiet`, e.g. with --json)."""
    return contextlib.nullcontext() if quiet else console.status(what, spinner="dots")


def int_list(value: str, option: str, example: str = "3,17") -> list[int]:
    """A comma-separated list of integers given to `option`, or a one-line error (ending with `example`)."""
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        hint = f", e.g. {example}" if example else ""
        raise EditkitError(f"{option} {value!r} is not a comma-separated list of integers{hint}") from None
