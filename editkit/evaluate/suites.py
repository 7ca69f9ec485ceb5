"""How one record is evaluated, per benchmark suite: which prompts are scored against which targets, and
which metrics come out. Every prompt of a record is scored in one batched call."""

from __future__ import annotations

import math
from dataclasses import dataclass

from editkit.errors import EditkitError
from editkit.evaluate import metrics as M
from editkit.evaluate.datasets import CounterFactRecord, EasyEditRecord, Record, ZsreRecord
from editkit.evaluate.scoring import generate_texts, score_targets
from editkit.requests import fill_prompt

HEADLINE = {
    "counterfact": ("ES", "PS", "NS"),
    "zsre": ("Efficacy", "Paraphrase", "Specificity"),
    "easyedit": ("Reliability", "Generalization", "Locality"),
}


@dataclass(frozen=True)
class ScoreOptions:
    """How to score: rows per forward pass; generation metrics (GE/RS) on or off, their length and seed."""

    batch_size: int = 64
    generation: bool = True
    gen_length: int = 100
    seed: int = 0


def suite_of(kind: str) -> str:
    """The metric suite of a dataset kind."""
    if kind in ("counterfact", "multi_counterfact", "toy"):
        return "counterfact"
    if kind in ("zsre", "easyedit"):
        return kind
    raise EditkitError(f"dataset {kind!r} has no edit metrics (known_1000 is for tracing); use counterfact or zsre")


def pre_edit(model, tok, record: Record, opts: ScoreOptions) -> dict | None:
    """What must be measured before the edit: EasyEdit's locality compares top-1 tokens before and after."""
    if isinstance(record, EasyEditRecord) and record.locality:
        prompts, answers = zip(*record.locality, strict=True)
        return {
            "locality": [
                list(s.argmax) for s in score_targets(model, tok, list(prompts), list(answers), opts.batch_size)
            ]
        }
    return None


def evaluate(model, tok, record: Record, opts: ScoreOptions, pre: dict | None = None, refs=None) -> tuple[dict, dict]:
    """(metrics, predictions) of `record` on the model as it is now."""
    if isinstance(record, CounterFactRecord):
        return _counterfact(model, tok, record, opts, refs)
    if isinstance(record, ZsreRecord):
        return _zsre(model, tok, record, opts)
    if isinstance(record, EasyEditRecord):
        return _easyedit(model, tok, record, opts, pre)
    raise EditkitError(f"records of type {type(record).__name__} have no edit metrics; use counterfact or zsre")


def _counterfact(model, tok, r: CounterFactRecord, opts: ScoreOptions, refs) -> tuple[dict, dict]:
    groups = {
        "rewrite": [fill_prompt(r.prompt, r.subject)],
        "paraphrase": list(r.paraphrase_prompts),
        "neighborhood": list(r.neighborhood_prompts),
    }
    prompts = [p for ps in groups.values() for p in ps]
    scores = score_targets(
        model, tok, [p for p in prompts for _ in "nt"], [r.target_new, r.target_true] * len(prompts), opts.batch_size
    )
    pairs, probs, at = {}, {}, 0
    for name, ps in groups.items():
        pairs[name] = [(scores[2 * i].nll, scores[2 * i + 1].nll) for i in range(at, at + len(ps))]
        probs[name] = [[math.exp(-a), math.exp(-b)] for a, b in pairs[name]]
        at += len(ps)
    preds = {"probs [new, true]": probs}
    metrics = M.counterfact_metrics(pairs["rewrite"], pairs["paraphrase"], pairs["neighborhood"])
    if opts.generation and r.generation_prompts:
        texts = generate_texts(model, tok, list(r.generation_prompts), opts.gen_length, seed=opts.seed + r.case_id)
        metrics["GE"] = M.ngram_entropy(texts)
        ref_texts = refs.for_record(r) if refs is not None else []
        if ref_texts:
            metrics["RS"] = M.tfidf_similarity(" ".join(texts), " ".join(ref_texts), refs.vectorizer)
        preds["generations"] = texts
    return metrics, preds


def _decoded_top1(tok, scores) -> list[str]:
    return [tok.decode(list(s.argmax)) for s in scores]


def _zsre(model, tok, r: ZsreRecord, opts: ScoreOptions) -> tuple[dict, dict]:
    edit = [fill_prompt(r.prompt, r.subject), *r.paraphrase_prompts]
    prompts, targets = [*edit, f"{r.loc}?"], [r.target_new] * len(edit) + [r.loc_answer]
    s = score_targets(model, tok, prompts, targets, opts.batch_size)
    metrics = {
        "Efficacy": M.token_accuracy([s[0].correct]),
        "Paraphrase": M.token_accuracy([x.correct for x in s[1:-1]]),
        "Specificity": M.token_accuracy([s[-1].correct]),
    }
    top = _decoded_top1(tok, s)
    return metrics, {"top1": {"edit": top[0], "paraphrase": top[1:-1], "loc": top[-1]}}


def _easyedit(model, tok, r: EasyEditRecord, opts: ScoreOptions, pre: dict | None) -> tuple[dict, dict]:
    groups = {
        "Reliability": [(fill_prompt(r.prompt, r.subject), r.target_new)],
        "Generalization": [(p, r.target_new) for p in r.rephrase_prompts],
        "Locality": list(r.locality),
        "Portability": list(r.portability),
    }
    rows = [row for g in groups.values() for row in g]
    scores = score_targets(model, tok, [p for p, _ in rows], [t for _, t in rows], opts.batch_size)
    metrics, preds, at = {}, {}, 0
    for name, g in groups.items():
        s = scores[at : at + len(g)]
        at += len(g)
        if not g:
            continue
        preds[name] = _decoded_top1(tok, s)
        if name == "Locality":
            metrics[name] = M.locality(pre["locality"], [list(x.argmax) for x in s])
        else:
            metrics[name] = M.prompt_accuracy([x.correct for x in s])
    return metrics, {"top1": preds}
