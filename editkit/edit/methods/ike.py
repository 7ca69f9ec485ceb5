"""IKE (Zheng et al. 2023, "Can we edit factual knowledge by in-context learning?"): no weights change; the edit
is a prompt context, k demonstrations and then the new fact, that every prompt is read behind:

    New Fact: <prompt> <new object>\\nPrompt: <query> <answer>\\n\\n   (k demonstrations)
    New Fact: <the request's prompt> <its new object>\\nPrompt: <the prompt being scored>

Each pool record gives the paper's three kinds of demonstration: copy (the fact's own prompt -> the new
object), update (a paraphrase -> the new object) and retain (a neighbourhood prompt -> its true object).
The k most similar to the new fact are kept, the most similar last, none naming the request's subject.
The paper ranks them by sentence embeddings; editkit ranks them by TF-IDF cosine (no embedding model
ships offline), which is stated wherever it is reported.

The paper edits one fact at a time. In a sequential run every fact edited so far would be in the context,
which soon outgrows the model's; `facts_per_prompt: N` keeps, for each prompt read, only the N edited facts
nearest it (TF-IDF cosine over the facts so far), with their demonstrations: editkit's retrieval, not the
paper's. With N or fewer facts edited it is the paper's context.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from editkit.edit.hparams import EditHParams, bounded
from editkit.edit.registry import Method, register
from editkit.edit.result import EditResult
from editkit.errors import EditkitError
from editkit.requests import EditRequest


@dataclass
class IKEHParams(EditHParams):
    """k demonstrations from the CounterFact-style records of `demonstrations` (a dataset name), from
    record `demo_offset` on (records before it, the evaluated ones, never serve as demonstrations)."""

    k: int = bounded(32, ge=0)
    demonstrations: str = "counterfact"
    demo_file: str | None = None
    demo_offset: int = bounded(2000, ge=0)
    demo_limit: int | None = bounded(None, ge=1)
    facts_per_prompt: int | None = bounded(None, ge=1)


def demonstration(fact_prompt: str, new: str, query: str, answer: str) -> str:
    return f"New Fact: {fact_prompt} {new}\nPrompt: {query} {answer}\n\n"


@functools.lru_cache(maxsize=4)
def pool(kind: str, file: str | None, offset: int, limit: int | None):
    """The demonstrations of the pool records and the TF-IDF index over them."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from editkit.evaluate.datasets import CounterFactRecord, dataset_path, load_dataset
    from editkit.requests import fill_prompt

    records = load_dataset(kind, dataset_path(kind, file), limit, offset)
    texts = []
    for r in records:
        if not isinstance(r, CounterFactRecord):
            raise EditkitError(f"IKE demonstrations need CounterFact-style records; {kind!r} has {type(r).__name__}")
        fact = fill_prompt(r.prompt, r.subject)
        demos = [demonstration(fact, r.target_new, fact, r.target_new)]
        demos += [demonstration(fact, r.target_new, p, r.target_new) for p in r.paraphrase_prompts[:1]]
        demos += [demonstration(fact, r.target_new, p, r.target_true) for p in r.neighborhood_prompts[:1]]
        texts += demos
    if not texts:
        raise EditkitError(f"no IKE demonstrations: {kind!r} has no records from demo_offset={offset}")
    vectorizer = TfidfVectorizer().fit(texts)
    return texts, vectorizer, vectorizer.transform(texts)


def context_for(requests: list[EditRequest], hp: IKEHParams) -> str:
    """The k demonstrations nearest to the new facts (none naming their subjects), then the new facts."""
    facts = [f"{r.text} {r.target_new}" for r in requests]
    demos = []
    if hp.k:
        texts, vectorizer, index = pool(hp.demonstrations, hp.demo_file, hp.demo_offset, hp.demo_limit)
        similarity = (index @ vectorizer.transform([" ".join(facts)]).T).toarray()[:, 0]
        own = {r.subject for r in requests}
        ranked = [i for i in similarity.argsort(kind="stable")[::-1] if not any(s in texts[i] for s in own)][: hp.k]
        demos = [texts[i] for i in reversed(ranked)]
    return "".join(demos) + "".join(f"New Fact: {f}\n" for f in facts) + "Prompt: "


@functools.lru_cache(maxsize=4)
def _fact_index(facts: tuple[str, ...]):
    """A TF-IDF index over the edited facts' texts (refit when a fact is added)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer().fit(facts)
    return vectorizer, vectorizer.transform(facts)


@functools.lru_cache(maxsize=4096)
def _context_of(requests: tuple[EditRequest, ...], hp: str) -> str:
    return context_for(list(requests), IKEHParams(**json.loads(hp)))


def read_ike(result: EditResult, prompt: str) -> str:
    """The context `prompt` is read behind: with `facts_per_prompt` N, the N edited facts nearest the prompt
    (the nearest last) and their demonstrations; else the whole context."""
    n = result.hparams.get("facts_per_prompt")
    if n is None or len(result.requests) <= n:
        return result.context
    facts = tuple(f"{r.text} {r.target_new}" for r in result.requests)
    vectorizer, index = _fact_index(facts)
    similarity = (index @ vectorizer.transform([prompt]).T).toarray()[:, 0]
    nearest = similarity.argsort(kind="stable")[::-1][:n]
    chosen = tuple(result.requests[i] for i in reversed(nearest))
    return _context_of(chosen, json.dumps(result.hparams, sort_keys=True))


def apply_ike(
    model, tokenizer, adapter, requests: list[EditRequest], hp: IKEHParams, stats, result: EditResult
) -> EditResult:
    """The context for all requests so far (earlier calls' included); the model is left as it is."""
    result.requests.extend(requests)
    result.context = context_for(result.requests, hp)
    return result.seal(model)


register(
    Method(
        "ike",
        apply_ike,
        IKEHParams,
        "IKE: in-context editing by demonstrations, no weights changed (Zheng et al. 2023)",
        changes="context",
        reads=read_ike,
    )
)
