"""How one record is evaluated, per benchmark suite: which prompts are scored against which targets, and
which metrics come out. The rows of several records can be scored together in right-padded batches."""

from __future__ import annotations

import math
from dataclasses import dataclass

from editkit.edit.result import Context, behind
from editkit.errors import EditkitError
from editkit.evaluate import metrics as M
from editkit.evaluate.datasets import CounterFactRecord, EasyEditRecord, Record, ZsreRecord
from editkit.evaluate.generation import answer_rates, greedy_answers, normalize
from editkit.evaluate.scoring import generate_texts, score_targets
from editkit.requests import fill_prompt
from editkit.toy import is_toy

HEADLINE = {
    "counterfact": ("ES", "PS", "NS"),
    "zsre": ("Efficacy", "Paraphrase", "Specificity"),
    "easyedit": ("Reliability", "Generalization", "Locality"),
}


@dataclass(frozen=True)
class ScoreOptions:
    """How to score: rows per forward pass; generation metrics (GE/RS) on or off, their length and seed;
    the protocols (teacher-forced, generation or both) and the greedy answers' token limit; `context`: the
    text each prompt is read behind (an in-context edit's demonstrations and new facts; None otherwise),
    whose tokens the prompts share are run once (a KV cache) rather than once per prompt."""

    batch_size: int = 64
    generation: bool = True
    gen_length: int = 100
    seed: int = 0
    protocol: str = "teacher-forced"
    max_new_tokens: int = 20
    context: Context = None

    @property
    def teacher_forced(self) -> bool:
        return self.protocol in ("teacher-forced", "both")

    @property
    def generate(self) -> bool:
        return self.protocol in ("generation", "both")

    def prompts(self, prompts) -> list[str]:
        """`prompts` as the model is given them: each behind its context."""
        return behind(self.context, prompts)


def suite_of(kind: str) -> str:
    """The metric suite of a dataset kind."""
    if kind in ("counterfact", "multi_counterfact") or is_toy(kind):
        return "counterfact"
    if kind in ("zsre", "easyedit"):
        return kind
    raise EditkitError(f"dataset {kind!r} has no edit metrics (known_1000 is for tracing); use counterfact or zsre")


def pre_edit(model, tok, record: Record, opts: ScoreOptions) -> dict | None:
    """What must be measured before the edit: EasyEdit's locality compares top-1 tokens (teacher-forced) or
    greedy answers (generation) before and after."""
    if not (isinstance(record, EasyEditRecord) and record.locality):
        return None
    prompts, answers = (list(x) for x in zip(*record.locality, strict=True))
    pre = {}
    if opts.teacher_forced:
        pre["locality"] = [list(s.argmax) for s in score_targets(model, tok, prompts, answers, opts.batch_size)]
    if opts.generate:
        pre["locality_answers"] = greedy_answers(model, tok, prompts, opts.max_new_tokens, opts.batch_size)
    return pre


def rows(record: Record) -> list[tuple[str, str]]:
    """The (prompt, target) pairs scored for `record`."""
    if isinstance(record, CounterFactRecord):
        prompts = [fill_prompt(record.prompt, record.subject), *record.paraphrase_prompts, *record.neighborhood_prompts]
        return [(p, t) for p in prompts for t in (record.target_new, record.target_true)]
    if isinstance(record, ZsreRecord):
        edit = [fill_prompt(record.prompt, record.subject), *record.paraphrase_prompts]
        return [(p, record.target_new) for p in edit] + [(f"{record.loc}?", record.loc_answer)]
    if isinstance(record, EasyEditRecord):
        return [row for g in _easyedit_groups(record).values() for row in g]
    raise EditkitError(f"records of type {type(record).__name__} have no edit metrics; use counterfact or zsre")


def probes(record: Record) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(paraphrases, neighbours) of `record`: prompts that should follow the edit, and prompts that should not."""
    if isinstance(record, CounterFactRecord):
        return record.paraphrase_prompts, record.neighborhood_prompts
    if isinstance(record, ZsreRecord):
        return record.paraphrase_prompts, (f"{record.loc}?",)
    if isinstance(record, EasyEditRecord):
        return record.rephrase_prompts, tuple(p for p, _ in record.locality)
    return (), ()


def evaluate_many(
    model, tok, records: list[Record], opts: ScoreOptions, pres: list, refs=None
) -> list[tuple[dict, dict]]:
    """(metrics, predictions) of each record on the model as it is now; all their rows scored together."""
    per = [rows(r) for r in records]
    flat = [row for rs in per for row in rs]
    prompts, targets = opts.prompts(p for p, _ in flat), [t for _, t in flat]
    scores = score_targets(model, tok, prompts, targets, opts.batch_size, share_prefix=opts.context is not None)
    out, at = [], 0
    for r, rs, pre in zip(records, per, pres, strict=True):
        s, at = scores[at : at + len(rs)], at + len(rs)
        if isinstance(r, CounterFactRecord):
            out.append(_counterfact(model, tok, r, s, opts, refs))
        elif isinstance(r, ZsreRecord):
            out.append(_zsre(tok, s))
        else:
            out.append(_easyedit(tok, r, s, pre))
    return out


def evaluate(model, tok, record: Record, opts: ScoreOptions, pre: dict | None = None, refs=None) -> tuple[dict, dict]:
    """(metrics, predictions) of one record on the model as it is now."""
    return evaluate_many(model, tok, [record], opts, [pre], refs)[0]


def _counterfact(model, tok, r: CounterFactRecord, scores, opts: ScoreOptions, refs) -> tuple[dict, dict]:
    sizes = {"rewrite": 1, "paraphrase": len(r.paraphrase_prompts), "neighborhood": len(r.neighborhood_prompts)}
    pairs, probs, at = {}, {}, 0
    for name, n in sizes.items():
        pairs[name] = [(scores[2 * i].nll, scores[2 * i + 1].nll) for i in range(at, at + n)]
        probs[name] = [[math.exp(-a), math.exp(-b)] for a, b in pairs[name]]
        at += n
    preds = {"probs [new, true]": probs}
    metrics = M.counterfact_metrics(pairs["rewrite"], pairs["paraphrase"], pairs["neighborhood"])
    if opts.generation and r.generation_prompts:
        heads = [opts.context(p) if opts.context else "" for p in r.generation_prompts]
        length = opts.gen_length + max(len(tok(h)["input_ids"]) if h else 0 for h in heads)
        prompts = [h + p for h, p in zip(heads, r.generation_prompts, strict=True)]  # each read once
        texts = generate_texts(model, tok, prompts, length, seed=opts.seed + r.case_id)
        texts = [t.removeprefix(h) for t, h in zip(texts, heads, strict=True)]  # GE, RS: the prompt and after
        metrics["GE"] = M.ngram_entropy(texts)
        ref_texts = refs.for_record(r) if refs is not None else []
        if ref_texts:
            metrics["RS"] = M.tfidf_similarity(" ".join(texts), " ".join(ref_texts), refs.vectorizer)
        preds["generations"] = texts
    return metrics, preds


def _decoded_top1(tok, scores) -> list[str]:
    return [tok.decode(list(s.argmax)) for s in scores]


def _zsre(tok, s) -> tuple[dict, dict]:
    metrics = {
        "Efficacy": M.token_accuracy([s[0].correct]),
        "Paraphrase": M.token_accuracy([x.correct for x in s[1:-1]]),
        "Specificity": M.token_accuracy([s[-1].correct]),
    }
    top = _decoded_top1(tok, s)
    return metrics, {"top1": {"edit": top[0], "paraphrase": top[1:-1], "loc": top[-1]}}


def _easyedit_groups(r: EasyEditRecord) -> dict[str, list[tuple[str, str]]]:
    return {
        "Reliability": [(fill_prompt(r.prompt, r.subject), r.target_new)],
        "Generalization": [(p, r.target_new) for p in r.rephrase_prompts],
        "Locality": list(r.locality),
        "Portability": list(r.portability),
    }


def _easyedit(tok, r: EasyEditRecord, scores, pre: dict | None) -> tuple[dict, dict]:
    metrics, preds, at = {}, {}, 0
    for name, g in _easyedit_groups(r).items():
        s, at = scores[at : at + len(g)], at + len(g)
        if not g:
            continue
        preds[name] = _decoded_top1(tok, s)
        if name == "Locality":
            metrics[name] = M.locality(pre["locality"], [list(x.argmax) for x in s])
        else:
            metrics[name] = M.prompt_accuracy([x.correct for x in s])
    return metrics, {"top1": preds}


# --- the generation protocol ------------------------------------------------------------------------------


def generation_groups(record: Record) -> dict[str, list[tuple[str, str]]]:
    """The (prompt, target) pairs answered by greedy generation, per metric: CounterFact's ES/PS (the new
    object generated) and NS (the true object still generated); zsRE's and EasyEdit's metrics likewise."""
    if isinstance(record, CounterFactRecord):
        return {
            "ES": [(fill_prompt(record.prompt, record.subject), record.target_new)],
            "PS": [(p, record.target_new) for p in record.paraphrase_prompts],
            "NS": [(p, record.target_true) for p in record.neighborhood_prompts],
        }
    if isinstance(record, ZsreRecord):
        return {
            "Efficacy": [(fill_prompt(record.prompt, record.subject), record.target_new)],
            "Paraphrase": [(p, record.target_new) for p in record.paraphrase_prompts],
            "Specificity": [(f"{record.loc}?", record.loc_answer)],
        }
    if isinstance(record, EasyEditRecord):
        return _easyedit_groups(record)
    raise EditkitError(f"records of type {type(record).__name__} have no edit metrics; use counterfact or zsre")


def generate_many(model, tok, records: list[Record], opts: ScoreOptions, pres: list) -> list[tuple[dict, dict]]:
    """(generation metrics, greedy answers per metric) of each record on the model as it is now; every
    record's prompts are generated together. A metric X is the share of answers starting with the target
    and X_contains the share containing it; EasyEdit's Locality is the share of answers unchanged (after
    normalisation) from before the edit."""
    groups = [generation_groups(r) for r in records]
    flat = [row for g in groups for rows in g.values() for row in rows]
    prompts = opts.prompts(p for p, _ in flat)
    answers = iter(greedy_answers(model, tok, prompts, opts.max_new_tokens, opts.batch_size, opts.context is not None))
    out = []
    for g, pre in zip(groups, pres, strict=True):
        metrics, texts = {}, {}
        for name, rows in g.items():
            texts[name] = [next(answers) for _ in rows]
            if not rows:  # none to answer (e.g. a record without neighbours): missing, as under teacher forcing
                metrics[name] = None
                if name != "Locality":
                    metrics[f"{name}_contains"] = None
                continue
            if name == "Locality":
                same = [normalize(a) == normalize(b) for a, b in zip(texts[name], pre["locality_answers"], strict=True)]
                metrics[name] = sum(same) / len(same)
                continue
            metrics[name], metrics[f"{name}_contains"] = answer_rates(texts[name], [t for _, t in rows])
        out.append((metrics, {k: v for k, v in texts.items() if v}))
    return out
