"""WISE edit benchmark: each of WISE's training steps ran the whole model (`model(...)`, how editkit did it
before) against `hooks.FromBlock`, which records the input of the side memory's block once and reruns only
the blocks from there up, in the same process, on the same requests; wall seconds per edit of each, and
whether the trained side memories are bit-identical. Last line: JSON (`ratio`: whole model / from block).

    python experiments/bench/bench_wise.py [--model toy|smollm2-135m] [--edits 3]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import editkit.edit.methods.wise as wise
from editkit.edit import METHODS, load_hparams
from editkit.evaluate.datasets import load_dataset
from editkit.models import load_model
from editkit.toy import default_dataset


class WholeModel:
    """`FromBlock`'s interface over the whole model's forward pass (the baseline)."""

    def __init__(self, model, adapter, start: int, **inputs) -> None:
        self.model, self.inputs = model, inputs

    def logits(self) -> torch.Tensor:
        return self.model(**self.inputs).logits


def edit(model, tok, adapter, requests, hp) -> tuple[float, dict]:
    """Seconds per edit and the trained side memory's tensors."""
    t0 = time.perf_counter()
    result = METHODS["wise"](model, tok, adapter, requests, hp, None)
    seconds = (time.perf_counter() - t0) / len(requests)
    (memory,) = result.memories
    tensors = {k: v.clone() for k, v in memory.tensors.items()}
    result.revert(model)
    return seconds, tensors


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="toy")
    p.add_argument("--data", default="../shared/data/counterfact-edit.json", help="CounterFact file (real models)")
    p.add_argument("--edits", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model(args.model, device="cpu")
    dataset = default_dataset(args.model)
    records = load_dataset(dataset, None if dataset != "counterfact" else args.data)[: args.edits]
    requests = [r.request() for r in records]
    hp = load_hparams("wise", args.model)
    times = {}
    for name, runner in (("whole model", WholeModel), ("from block", wise.FromBlock)):
        wise.FromBlock = runner
        times[name], tensors = edit(model, tok, adapter, requests, hp)
        if name == "whole model":
            baseline = tensors
    same = baseline.keys() == tensors.keys() and all(torch.equal(baseline[k], tensors[k]) for k in baseline)
    layer, n = hp.layers[0], adapter.n_layers
    print(f"{args.model}: WISE at layer {layer} of {n}, {len(requests)} edits, {hp.n_iter} steps at most each")
    for name, s in times.items():
        print(f"  {name:12s} {s:7.2f} s per edit")
    ratio = times["whole model"] / times["from block"]
    print(f"  ratio x{ratio:.2f}; side memories bit-identical: {same}")
    print(json.dumps({"model": args.model, "layer": layer, "seconds_per_edit": times, "ratio": ratio, "same": same}))


if __name__ == "__main__":
    main()
