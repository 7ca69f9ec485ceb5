"""Every SAE architecture at matched L0 on one hook: sparsity-fidelity table in experiments/README.md.

Caches the hook's activations once (resumable store), trains each registered architecture on them with
the same steps, width, learning rate and seed; k fixes L0 for the TopK family, and for the penalised ones
(standard, gated: L1; jumprelu: L0) the coefficient is bisected in log space until the L0 on the store's
first 20,000 training activations is near the target (the run nearest it is kept: the target is matched on
training data, never on the evaluation lines). Each SAE is then evaluated with `editkit sae eval`'s metrics
on held-out corpus lines after those the store read.

    python experiments/sae_compare.py --model toy --hook blocks.3.hook_resid_post --l0 16
    python experiments/sae_compare.py --from-json runs/sae-compare/compare.json --plot experiments/figures/x.png

`--from-json` tables and plots a finished run's compare.json (its settings are in the file) without training.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from itertools import islice
from pathlib import Path

import torch

from editkit.corpus import open_corpus
from editkit.features.evaluate import evaluate_sae
from editkit.features.hookpoints import hook_width, resolve_hook
from editkit.features.sae import SAEConfig
from editkit.features.saes import get, names
from editkit.features.store import ActivationStore, cache_activations
from editkit.features.train import train_sae
from editkit.io import replace_section
from editkit.models import load_model

README = Path(__file__).parent / "README.md"
PENALTY = {"standard": "l1_coefficient", "gated": "l1_coefficient", "jumprelu": "l0_coefficient"}
START = {"l1_coefficient": 5.0, "l0_coefficient": 1.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy")
    p.add_argument("--hook", default="blocks.3.hook_resid_post")
    p.add_argument("--corpus", default="toy")
    p.add_argument("--l0", type=int, default=16, help="target L0 (k of the TopK family)")
    p.add_argument("--d-sae", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=100_000)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--bisect", type=int, default=4, help="runs per penalised architecture")
    p.add_argument("--eval-texts", type=int, default=300)
    p.add_argument("--store", type=Path, default=Path("/tmp/editkit-sae-compare.h5"))
    p.add_argument("--out", type=Path, default=Path("runs/sae-compare"))
    p.add_argument("--archs", default=",".join(names()))
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--section", default="sae-compare", help="README section marker (one per model)")
    p.add_argument("--plot", type=Path, default=None, help="also draw L0 against EV and CE recovered (.png/.pdf)")
    p.add_argument("--from-json", type=Path, default=None, help="table and plot this compare.json; train nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        return _report(argparse.Namespace(**{**vars(args), **saved["args"]}), saved["rows"])
    torch.set_num_threads(1)
    model, tok, adapter = load_model(args.model)
    hook = resolve_hook(adapter, args.hook)
    cache_activations(model, tok, adapter, hook, args.corpus, args.store, args.max_tokens, args.model)
    acts = ActivationStore(args.store)
    probe = acts.read(0, 20_000)
    held_out = list(islice(open_corpus(args.corpus, model, tok).texts(), int(acts.attrs["texts_done"]), None))
    held_out = held_out[: args.eval_texts]
    base = dict(d_in=hook_width(model, adapter, hook), d_sae=args.d_sae, hook_name=hook.name, model_name=args.model)
    base |= dict(k=args.l0, lr=1e-3, training_steps=args.steps, batch_size=args.batch_size, seed=0)
    base |= dict(lr_decay_steps=args.steps // 5, normalize_activations="expected_average_only_in")
    base |= dict(dataset_path=args.corpus)
    rows = []
    for arch in args.archs.split(","):
        name = get(arch).name
        t0 = time.process_time()
        tried = []
        field = PENALTY.get(name)
        lo = hi = None
        c = START.get(field, 0.0)
        for _ in range(args.bisect if field else 1):
            cfg = SAEConfig(architecture=name, **base, **({field: c} if field else {}))
            sae, log = train_sae(acts.batches(cfg.batch_size, cfg.seed), cfg)
            l0 = (sae.encode(probe) > 0).sum(-1).float().mean().item()
            tried.append((abs(math.log(max(l0, 1e-3) / args.l0)), c, l0, sae, log))
            setting = {field: c} if field else {"k": args.l0}
            print(json.dumps({"arch": name, **setting, "train_l0": round(l0, 2)}), flush=True)
            if not field:
                break
            lo, hi = (c, hi) if l0 > args.l0 else (lo, c)  # more L0 than wanted: a larger coefficient
            c = math.sqrt(lo * hi) if lo and hi else (c * 4 if hi is None else c / 4)
        _, c, l0, sae, log = min(tried, key=lambda t: t[0])
        cpu = time.process_time() - t0
        sae.save(args.out / name)
        ev = evaluate_sae(model, tok, adapter, sae, held_out, sae.cfg.context_size).to_json()
        row = {"arch": name, "setting": f"{field} {c:.3g}" if field else f"k {args.l0}", "train_l0": l0}
        row |= {"runs": len(tried), "cpu_s": cpu, "final_train_ev": log[-1]["explained_variance"], **ev}
        rows.append(row)
        print(json.dumps(row), flush=True)
    settings = {k: getattr(args, k) for k in RUN_ARGS}
    (args.out / "compare.json").write_text(json.dumps({"args": settings, "rows": rows}, indent=2) + "\n")
    _report(args, rows)
    print(json.dumps({"rows": len(rows), "out": str(args.out)}))


RUN_ARGS = ("model", "hook", "corpus", "l0", "d_sae", "max_tokens", "steps", "batch_size", "bisect", "eval_texts")


def _report(args: argparse.Namespace, rows: list[dict]) -> None:
    """The README section (unless --no-readme) and the plot (with --plot)."""
    if not args.no_readme:
        replace_section(README, f"<!-- {args.section}:begin -->", f"<!-- {args.section}:end -->", _section(args, rows))
    if args.plot is not None:
        _plot(args, rows, args.plot)


def _plot(args: argparse.Namespace, rows: list[dict], path: Path) -> None:
    """Sparsity-fidelity: L0 against explained variance and against CE loss recovered, one point per architecture."""
    from editkit.locate.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in zip(
        axes, ("explained_variance", "ce_loss_recovered"), ("explained variance", "CE loss recovered"), strict=True
    ):
        for i, r in enumerate(rows):
            ax.scatter(r["l0"], r[key], color=f"C{i}", label=r["arch"])
            ax.annotate(r["arch"], (r["l0"], r[key]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axvline(args.l0, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="L0 (held-out tokens)", ylabel=label, title=f"{label} at target L0 {args.l0}")
    fig.suptitle(f"{args.model}, {args.hook}, {args.d_sae} features")
    save_figure(fig, path)


def _section(args: argparse.Namespace, rows: list[dict]) -> str:
    flags = " ".join(f"--{k.replace('_', '-')} {getattr(args, k)}" for k in RUN_ARGS)
    head = (
        f"<!-- {args.section}:begin -->\n`python experiments/sae_compare.py {flags}` "
        f"({rows[0]['n_tokens']:,} held-out tokens):\n\n"
        "| architecture | setting | L0 | explained variance | CE loss recovered | dead | dense | shrinkage γ "
        "| CPU s (runs) |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['arch']} | {r['setting']} | {r['l0']:.1f} | {r['explained_variance']:.4f} | "
        f"{r['ce_loss_recovered']:.2%} | {r['dead_fraction']:.1%} | {r['dense_fraction']:.1%} | "
        f"{r['shrinkage']:.3f} | {r['cpu_s']:.0f} ({r['runs']}) |\n"
        for r in rows
    )
    return head + body + f"<!-- {args.section}:end -->"


if __name__ == "__main__":
    main()
