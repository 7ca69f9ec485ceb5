"""The showcase on the toy model, as plain library calls the CLI renders: what the model believes, where a fact
lives, which SAE features carry it, a ROME edit of it, and how good such edits are."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from editkit.models import Prediction, top_k
from editkit.tokens import target_ids
from editkit.toy import toy_dir
from editkit.toy.world import Fact, World, fact_prompts, measure_recall


@dataclass(frozen=True)
class Belief:
    """The model's top predictions for one fact, in a training template and in an unseen paraphrase."""

    fact: Fact
    relation: str
    prompt: str
    top: list[Prediction]
    paraphrase: str
    paraphrase_top: list[Prediction]
    object_token: int

    @property
    def correct(self) -> bool:
        return self.top[0].token_id == self.object_token

    @property
    def paraphrase_correct(self) -> bool:
        return self.paraphrase_top[0].token_id == self.object_token


def load_toy_world() -> World:
    return World.load(toy_dir() / "world.json")


def beliefs(model, tokenizer, world: World, facts: list[Fact], k: int = 3) -> list[Belief]:
    """Top-`k` next tokens for each fact's first training template and first paraphrase."""
    out = []
    for f in facts:
        prompt = fact_prompts(world, f)[0]
        para = fact_prompts(world, f, heldout=True)[0]
        out.append(
            Belief(
                f,
                world.relations[f.relation_id]["name"],
                prompt,
                top_k(model, tokenizer, prompt, k),
                para,
                top_k(model, tokenizer, para, k),
                target_ids(tokenizer, prompt, f.object)[0],
            )
        )
    return out


def demo_facts(world: World, seed: int = 0) -> list[Fact]:
    """One fact per relation, from subjects never shown with the paraphrase templates."""
    rng = random.Random(seed)
    return [
        rng.choice([f for f in world.facts if f.relation_id == rid and not f.paraphrase_seen])
        for rid in world.relations
    ]


def recall_sample(model, tokenizer, world: World, n: int = 200, seed: int = 0) -> dict[str, float]:
    """Recall (see `measure_recall`) on `n` facts drawn with `seed`."""
    return measure_recall(
        model, tokenizer, world, facts=random.Random(seed).sample(world.facts, min(n, len(world.facts)))
    )


def trace_belief(model, tokenizer, adapter, belief: Belief, world: World, samples: int = 10, window: int = 2):
    """Causal trace (all kinds, fast, the s3 noise of the toy world's subjects) of a belief's prompt; the
    mlp/attn window is 2 layers, as 10 would cover all 6 of the toy model's."""
    from editkit.locate.tracing import trace

    subjects = sorted({f.subject for f in world.facts})
    return trace(
        model,
        tokenizer,
        adapter,
        belief.prompt,
        belief.fact.subject,
        samples=samples,
        window=window,
        noise_subjects=subjects,
    )


def demo_features(model, tokenizer, adapter, belief: Belief, world: World, top: int = 5):
    """Demo step: the shipped toy SAE at block 3, the object the belief is contrasted with, and the features
    that carry logit(object) − logit(that one), verified by ablating them (`attribute_features`)."""
    from editkit.features.attribution import attribute_features
    from editkit.features.sae import SAE

    sae = SAE.load(toy_dir() / "sae-blocks.3.hook_resid_post")
    obj = belief.fact.object
    alt = next(o for o in world.relations[belief.fact.relation_id]["objects"] if o != obj)
    return (
        sae,
        alt,
        attribute_features(model, tokenizer, adapter, sae, belief.prompt, obj, alt, belief.fact.subject, top=top),
    )


def demo_edit(model, tokenizer, adapter, prompt: str, subject: str, target_true: str, world, out: Path) -> dict:
    """The demo's edit step: ROME rewrites one toy fact to another object of its relation, the before/after
    table is returned, and a checkpoint is written to `out/toy-edited` and reloaded with plain transformers
    in a fresh interpreter (no editkit import)."""
    import subprocess
    import sys

    from editkit.edit import edit, load_hparams
    from editkit.edit.checkpoint import save_checkpoint
    from editkit.edit.run import make_stats, predictions, probe_prompts
    from editkit.requests import EditRequest
    from editkit.toy import NAME
    from editkit.toy.sources import edit_probes

    rid = next(r for r, rel in world.relations.items() if prompt.replace(subject, "{}") in rel["train_templates"])
    new = next(o for o in world.relations[rid]["objects"] if o != target_true)
    request = EditRequest(prompt.replace(subject, "{}"), subject, new, target_true)
    hp = load_hparams("rome", NAME)
    probes = probe_prompts(request, fallback=edit_probes(request))
    before = predictions(model, tokenizer, probes, request)
    result = edit(
        model, tokenizer, adapter, [request], "rome", hp, make_stats(model, tokenizer, adapter, hp, progress=True)
    )
    after = predictions(model, tokenizer, probes, request)
    checkpoint = Path(out) / "toy-edited"
    try:
        save_checkpoint(model, tokenizer, checkpoint, result, NAME)
    finally:
        result.revert(model)
    script = (
        "import sys, torch; from transformers import AutoModelForCausalLM as M, AutoTokenizer as T; "
        f"p = {str(checkpoint)!r}; m, t = M.from_pretrained(p).eval(), T.from_pretrained(p); "
        f"l = m(**t({request.text!r}, return_tensors='pt')).logits[0, -1]; "
        "assert not [k for k in sys.modules if k.startswith('editkit')]; print(t.decode([int(l.argmax())]).strip())"
    )
    reloaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    return {
        "request": request,
        "before": before,
        "after": after,
        "checkpoint": str(checkpoint),
        "reloaded_top1": reloaded.stdout.strip() if reloaded.returncode == 0 else f"failed: {reloaded.stderr[-200:]}",
    }


def demo_eval(bundle, out: Path, n: int = 20) -> list[Path]:
    """Demo step: the unedited model vs one MEMIT batch of the first `n` toy CounterFact records of distinct
    subjects, a fresh run in `out/eval` (not a resume); returns the run directories."""
    import shutil

    from editkit.evaluate import compare_methods, load_dataset
    from editkit.toy import NAME

    records = load_dataset(NAME, limit=n, distinct_subjects=True)
    shutil.rmtree(out / "eval", ignore_errors=True)
    return compare_methods(
        bundle, records, ["none", "memit"], out / "eval", NAME, NAME, batch=True, generation=False,
        protocol="teacher-forced", capability=False,
    )  # fmt: skip
