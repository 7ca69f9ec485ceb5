"""Edit benchmark: where the time of a ROME edit and of a MEMIT batch goes, and the v*/z speed-up.

- profile: one step of the previous v*/z path (the whole model each step), split into the forward below the
  first block that depends on δ, the forward from there up, the final norm + unembedding + loss, and the
  backward pass; and the share of an edit spent in the key (k̄, C⁻¹k̄), the target, and the update / solve;
- ROME: seconds per edit by the previous path (each step runs the whole model) over the new one (blocks below
  the edited layer once, logits only where the loss reads), same process, same hyper-parameters, and the
  relative difference of their ΔW in float32 and with the model in float64 (`rome_delta_rel_diff`: equal
  algorithms agree there; in float32 100 Adam steps at the toy's lr amplify the paths' different rounding);
- MEMIT: seconds per request for batches of `--sizes` (targets optimised in one batch), and the previous path
  (one request at a time, the whole model each step) at `--old-size` requests, with the ΔW difference (in
  float32 and with the model in float64, `memit_delta_rel_diff`).

    python experiments/bench/bench_edit.py [--model toy|smollm2-135m|PATH] [--sizes 10,100,1000] [--old-size 10]
        [--memit-hparams FILE] [--set key=value] [--repeats 2] [--threads 1]

`--set` overrides MEMIT's hyper-parameters, `--rome-set` ROME's. Last line: JSON.

    python experiments/bench/bench_edit.py --methods all [--batch 100] [--model toy]

instead gives one row per registered method (its shipped hparams for --model): seconds for one edit and for
one call with a batch of `--batch` requests on distinct subjects (each method handles a batch as it is meant
to: ROME, r-ROME, GRACE and WISE one request after another, MEMIT, AlphaEdit, EMMET and UltraEdit in one
solve), the peak memory above the model and statistics during each (on CPU the resident memory sampled every
5 ms, with every allocation over 128 KiB given back to the system when freed and the heap trimmed before each
call, so that it tracks live memory; `max_memory_allocated` on CUDA), and each time as a ratio to ROME's in
the same process.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import threading
import time
from contextlib import ExitStack, contextmanager

import torch

import editkit.edit.methods.memit
import editkit.edit.methods.rome
from editkit.edit import METHODS, edit, load_hparams, needs_stats
from editkit.edit.common import context_prefixes
from editkit.edit.methods.rome import rome_key, rome_update
from editkit.edit.run import make_stats
from editkit.edit.target import optimise_targets, request_rows
from editkit.errors import EditkitError
from editkit.evaluate.datasets import load_edit_requests
from editkit.hooks import Trace
from editkit.models import load_model, toy_dir
from editkit.tensors import frozen
from editkit.tokens import pad_id, pad_rows


@contextmanager
def previous_path():
    """The code path before the speed-up: each request's target alone, the whole model run every step."""

    def reference(model, tok, adapter, module, requests, prefixes, hp, cached=True):
        return [t for r in requests for t in optimise_targets(model, tok, adapter, module, [r], prefixes, hp, False)]

    saved = editkit.edit.methods.rome.optimise_targets, editkit.edit.methods.memit.optimise_targets
    editkit.edit.methods.rome.optimise_targets = editkit.edit.methods.memit.optimise_targets = reference
    try:
        yield
    finally:
        editkit.edit.methods.rome.optimise_targets, editkit.edit.methods.memit.optimise_targets = saved


def step_profile(model, tok, adapter, module: str, request, prefixes, hp, repeats: int = 3) -> dict[str, float]:
    """Seconds of one step of the previous path, by part (min over `repeats`): forward below the first block
    that depends on δ, forward from it up to the final norm, final norm + unembedding + loss, backward."""
    device = next(model.parameters()).device
    rows = request_rows(tok, request, prefixes)
    ids, mask = pad_rows(rows.ids, pad_id(tok))
    ids, mask = ids.to(device), mask.to(device)
    names = adapter.names("block")
    first = next(i for i, b in enumerate(names) if module == b or module.startswith(b + "."))
    start = first + 1 if module == names[first] else first
    stamps: dict[str, float] = {}

    def stamp(key):
        def fn(x, name):
            stamps[key] = time.perf_counter()
            return x

        return fn

    at, look = torch.arange(len(rows.ids), device=device), torch.tensor(rows.look, device=device)
    best: dict[str, float] = {}
    with frozen(model):
        for _ in range(repeats):
            delta = torch.zeros(adapter.hidden_size, requires_grad=True)  # blocks and mlp_out write the residual

            def add(out, name, delta=delta):
                out = out.clone()
                out[at, look] += delta
                return out

            with ExitStack() as stack:
                stack.enter_context(Trace(model, module, retain_output=False, edit_output=add))
                if start < len(names):
                    stack.enter_context(Trace(model, names[start], retain_output=False, edit_input=stamp("above")))
                stack.enter_context(Trace(model, adapter.final_norm, retain_output=False, edit_input=stamp("norm")))
                t0 = time.perf_counter()
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            r, p, t = (torch.tensor(x, device=device) for x in zip(*rows.nll, strict=True))
            loss = -torch.log_softmax(logits, -1)[r, p, t].mean()
            t_loss = time.perf_counter()
            loss.backward()
            t_back = time.perf_counter()
            above = stamps.get("above", stamps["norm"])
            split = {
                "below": above - t0,
                "above": stamps["norm"] - above,
                "unembed": t_loss - stamps["norm"],
                "backward": t_back - t_loss,
            }
            best = {k: min(v, best.get(k, v)) for k, v in split.items()}
    return best


def fractions(parts: dict[str, float]) -> dict[str, float]:
    total = sum(parts.values())
    return {k: round(v / total, 3) for k, v in parts.items()}


def rome_parts(model, tok, adapter, request, hp, stats):
    """One ROME edit (new path), timed by stage: key (k̄, C⁻¹k̄), target (v*), update (Λ); and its Target."""
    layer = adapter.layer(hp.layers[0])
    t0 = time.perf_counter()
    prefixes = context_prefixes(model, tok, hp.context_templates, hp.seed)
    u, k_bar, out_bar = rome_key(model, tok, adapter, request, hp, stats, layer, prefixes)
    t1 = time.perf_counter()
    (target,) = optimise_targets(model, tok, adapter, adapter.name("mlp_out", layer), [request], prefixes, hp)
    t2 = time.perf_counter()
    rome_update(model, tok, adapter, request, hp, layer, u, target.value, (k_bar, out_bar))
    return {"key": t1 - t0, "target": t2 - t1, "update": time.perf_counter() - t2}, target


@contextmanager
def watched_targets(record: dict):
    """MEMIT's target optimisation (the new path) timed and its Targets kept in `record`."""
    inner = editkit.edit.methods.memit.optimise_targets

    def watched(*args, **kwargs):
        t = time.perf_counter()
        got = inner(*args, **kwargs)
        record["seconds"], record["targets"] = time.perf_counter() - t, got
        return got

    editkit.edit.methods.memit.optimise_targets = watched
    try:
        yield record
    finally:
        editkit.edit.methods.memit.optimise_targets = inner


def timed_edit(model, tok, adapter, requests, method, hp, stats):
    t = time.perf_counter()
    result = edit(model, tok, adapter, requests, method, hp, stats)
    seconds = time.perf_counter() - t
    result.revert(model)
    return seconds, result


def rel_diff(a, b) -> float:
    num = sum(float((x.matrix().double() - y.matrix().double()).norm() ** 2) for x, y in zip(a, b, strict=True))
    den = sum(float(y.matrix().double().norm() ** 2) for y in b)
    return (num / den) ** 0.5


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _rss() -> int:
    """This process's resident memory in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: str):
    """Yields a dict whose "bytes" is, afterwards, the peak memory above the level at entry."""
    out: dict[str, int] = {}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        yield out
        torch.cuda.synchronize()
        out["bytes"] = torch.cuda.max_memory_allocated() - start
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)  # large blocks mmapped: freed memory leaves the resident set
    libc.malloc_trim(0)
    start, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        yield out
    finally:
        done.set()
        watcher.join()
        out["bytes"] = max(peak[0], _rss()) - start


def method_rows(model, tok, adapter, model_name: str, names: list[str], requests, device: str) -> list[dict]:
    """Per method: seconds and peak memory of one edit and of one call with all `requests` (reverted after)."""
    rows = []
    for name in names:
        try:
            hp = load_hparams(name, model_name)
        except EditkitError as e:
            print(f"{name}: skipped ({e})")
            continue
        stats = None
        if needs_stats(name, hp):
            stats = make_stats(model, tok, adapter, hp)
            stats.compute(sorted(adapter.layer(x) for x in hp.layers))
        row = {"method": name}
        for key, batch in (("one", requests[:1]), ("batch", requests)):
            try:
                with peak_memory(device) as mem:
                    seconds, _ = timed_edit(model, tok, adapter, batch, name, hp, stats)
            except EditkitError as e:  # UltraEdit normalises over a batch: a lone request is refused
                print(f"{name}, {len(batch)} request(s): refused ({e})")
                row[f"{key}_s"] = row[f"{key}_peak_mib"] = None
                continue
            row[f"{key}_s"], row[f"{key}_peak_mib"] = round(seconds, 3), round(mem["bytes"] / 2**20, 1)
        rows.append(row)
        print(
            f"{name}: one edit {_cell(row['one_s'], 's')} (peak +{_cell(row['one_peak_mib'], ' MiB')}), "
            f"{len(requests)} requests {_cell(row['batch_s'], 's')} (peak +{_cell(row['batch_peak_mib'], ' MiB')})",
            flush=True,
        )
    base = next((r for r in rows if r["method"] == "rome"), None)
    for r in rows:  # ratios to ROME, measured in this process
        for key in ("one_s", "batch_s"):
            ok = base is not None and r[key] is not None and base[key]
            r[f"{key}_vs_rome"] = round(r[key] / base[key], 3) if ok else None
    return rows


def _cell(value, unit: str) -> str:
    return "–" if value is None else f"{value:g}{unit}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="toy", help="toy, a named model (smollm2-135m) or a model directory")
    p.add_argument("--records", default=None, help="CounterFact-style file (default: the toy world's)")
    p.add_argument("--sizes", default="10,100,1000")
    p.add_argument("--old-size", type=int, default=10, help="MEMIT batch size for the previous path")
    p.add_argument("--rome-hparams", default=None, help="ROME hparams file (default: shipped for --model)")
    p.add_argument("--memit-hparams", default=None, help="MEMIT hparams file (default: shipped for --model)")
    p.add_argument("--repeats", type=int, default=2, help="ROME edits per path (the fastest is kept)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="MEMIT hyper-parameter override key=value")
    p.add_argument("--rome-set", action="append", default=[], help="ROME hyper-parameter override key=value")
    p.add_argument("--methods", default=None, help="'all' or names: one row per method instead (see above)")
    p.add_argument("--batch", type=int, default=100, help="requests per call of the per-method rows")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model(args.model, device=args.device)
    records = args.records or toy_dir() / "counterfact.json"
    if args.methods:
        names = list(METHODS) if args.methods == "all" else args.methods.split(",")
        pairs, seen = load_edit_requests(records), set()
        requests = [r for r, _ in pairs if not (r.subject in seen or seen.add(r.subject))][: args.batch]
        rows = method_rows(model, tok, adapter, args.model, names, requests, args.device)
        print(json.dumps({"bench": "edit_methods", "model": args.model, "threads": args.threads,
                          "device": args.device, "batch": len(requests), "rows": rows}))  # fmt: skip
        return
    rome_hp = load_hparams("rome", args.model, file=args.rome_hparams, overrides=args.rome_set)
    memit_hp = load_hparams("memit", args.model, file=args.memit_hparams, overrides=args.set)
    stats = make_stats(model, tok, adapter, memit_hp)
    layers = set(memit_hp.layers) | (set(rome_hp.layers) if needs_stats("rome", rome_hp) else set())
    stats.compute(sorted(adapter.layer(x) for x in layers))
    sizes = [int(x) for x in args.sizes.split(",")]
    requests = [r for r, _ in load_edit_requests(records, limit=max(sizes + [args.old_size]))]
    request = requests[0]

    # where the time goes (previous path, one step; and each method's stages)
    prefixes = context_prefixes(model, tok, rome_hp.context_templates, rome_hp.seed)
    rome_module = adapter.name("mlp_out", rome_hp.layers[0])
    memit_module = adapter.name("block", memit_hp.layers[-1])
    step = {
        "rome": step_profile(model, tok, adapter, rome_module, request, prefixes, rome_hp),
        "memit": step_profile(
            model,
            tok,
            adapter,
            memit_module,
            request,
            context_prefixes(model, tok, memit_hp.context_templates),
            memit_hp,
        ),
    }
    for name, parts in step.items():
        print(
            f"{name}, one v*/z step of the previous path: "
            + ", ".join(f"{k} {v:.0%}" for k, v in fractions(parts).items())
        )
    rome_stage, target = rome_parts(model, tok, adapter, request, rome_hp, stats)
    print("ROME, one edit (new path): " + ", ".join(f"{k} {v:.2f}s" for k, v in rome_stage.items()))

    # ROME: previous path vs new, same process
    with previous_path():
        old = min(
            (timed_edit(model, tok, adapter, [request], "rome", rome_hp, stats) for _ in range(args.repeats)),
            key=lambda x: x[0],
        )
    new = min(
        (timed_edit(model, tok, adapter, [request], "rome", rome_hp, stats) for _ in range(args.repeats)),
        key=lambda x: x[0],
    )
    rome_diff = rel_diff(new[1].deltas, old[1].deltas)
    print(
        f"ROME, one edit: previous path {old[0]:.2f}s, new {new[0]:.2f}s (x{old[0] / new[0]:.2f}), "
        f"ΔW relative difference {rome_diff:.1e} in float32, {target.steps} Adam steps (stop: {target.stop})"
    )
    # the same edit with the model in float64: if both paths then agree, the float32 difference is rounding
    # (the two paths sum in different orders) amplified by the optimisation, not a difference of algorithm
    dtype = next(model.parameters()).dtype
    model.to(torch.float64)
    prefixes64 = context_prefixes(model, tok, rome_hp.context_templates, rome_hp.seed)
    layer = adapter.layer(rome_hp.layers[0])
    u, k_bar, out_bar = rome_key(model, tok, adapter, request, rome_hp, stats, layer, prefixes64)
    targets64 = [
        optimise_targets(model, tok, adapter, rome_module, [request], prefixes64, rome_hp, cached)[0]
        for cached in (False, True)
    ]
    dW64 = [rome_update(model, tok, adapter, request, rome_hp, layer, u, t.value, (k_bar, out_bar)) for t in targets64]
    model.to(dtype)
    rome_diff64 = rel_diff(dW64[1:], dW64[:1])
    # ΔW = Λ uᵀ with Λ ∝ v* − W k − b = δ (the bare prompt's output is v*'s init): δ itself, kept in float64
    d_old, d_new = (t.delta for t in targets64)
    delta_diff64 = float((d_new - d_old).norm() / d_old.norm())
    print(
        f"ROME, the same edit with the model in float64: ΔW relative difference {rome_diff64:.1e} (ΔW stored in "
        f"float32), δ of v* relative difference {delta_diff64:.1e} ({d_old.dtype})"
    )

    # MEMIT: the previous path at --old-size, the new one at each size
    few = requests[: args.old_size]
    with previous_path():
        memit_old = timed_edit(model, tok, adapter, few, "memit", memit_hp, stats)
    memit_new_few = timed_edit(model, tok, adapter, few, "memit", memit_hp, stats)
    memit_diff = rel_diff(memit_new_few[1].deltas, memit_old[1].deltas)
    model.to(torch.float64)
    with previous_path():
        _, memit_old64 = timed_edit(model, tok, adapter, few, "memit", memit_hp, stats)
    _, memit_new64 = timed_edit(model, tok, adapter, few, "memit", memit_hp, stats)
    model.to(dtype)
    memit_diff64 = rel_diff(memit_new64.deltas, memit_old64.deltas)
    print(
        f"MEMIT, {len(few)} requests: previous path {memit_old[0] / len(few):.2f} s/request, new "
        f"{memit_new_few[0] / len(few):.2f} s/request, ΔW relative difference {memit_diff:.1e} in float32, "
        f"{memit_diff64:.1e} with the model in float64"
    )
    per_request, stages, steps, stops = {}, {}, {}, {}
    for n in sizes:
        batch = requests[:n]
        with watched_targets({}) as z:
            seconds, _ = timed_edit(model, tok, adapter, batch, "memit", memit_hp, stats)
        per_request[n] = seconds / len(batch)
        stages[n] = fractions({"target": z["seconds"], "keys_solve_write": max(seconds - z["seconds"], 0.0)})
        steps[n] = sum(t.steps for t in z["targets"]) / n
        stops[n] = {k: sum(t.stop == k for t in z["targets"]) for k in sorted({t.stop for t in z["targets"]})}
        print(
            f"MEMIT, {len(batch)} requests: {seconds:.1f}s, {per_request[n]:.3f} s/request; "
            + ", ".join(f"{k} {v:.0%}" for k, v in stages[n].items())
            + f"; {steps[n]:.1f} Adam steps per request, stops {stops[n]}"
        )
    print(
        json.dumps(
            {
                "bench": "edit",
                "model": args.model,
                "threads": args.threads,
                "overrides": args.set,
                "rome_overrides": args.rome_set,
                "step_fractions_previous": {k: fractions(v) for k, v in step.items()},
                "rome_stage_s": {k: round(v, 4) for k, v in rome_stage.items()},
                "rome_previous_s": round(old[0], 3),
                "rome_s": round(new[0], 3),
                "rome_speedup": round(old[0] / new[0], 3),
                "rome_delta_rel_diff": rome_diff64,
                "rome_delta_rel_diff_float32": rome_diff,
                "rome_target_delta_rel_diff_float64": delta_diff64,
                "rome_steps": target.steps,
                "rome_stop": target.stop,
                "memit_previous_per_request_s": {str(len(few)): round(memit_old[0] / len(few), 4)},
                "memit_delta_rel_diff": memit_diff64,
                "memit_delta_rel_diff_float32": memit_diff,
                "memit_per_request_s": {str(k): round(v, 4) for k, v in per_request.items()},
                # previous path's s/request at --old-size (linear in the requests) over the new one at each size
                "memit_speedup": {str(k): round(memit_old[0] / len(few) / v, 3) for k, v in per_request.items()},
                "memit_stage_fractions": {str(k): v for k, v in stages.items()},
                "memit_mean_steps": {str(k): round(v, 2) for k, v in steps.items()},
                "memit_stops": {str(k): v for k, v in stops.items()},
                "ok": old[0] / new[0] >= 2 and rome_diff64 <= 1e-5 and memit_diff64 <= 1e-5,
            }
        )
    )


if __name__ == "__main__":
    main()
