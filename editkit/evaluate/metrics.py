"""The papers' metrics as plain functions of scores: CounterFact (ROME/MEMIT), zsRE, EasyEdit, generation
entropy and reference score, and the per-run summary (mean and 95% confidence interval)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from editkit.errors import EditkitError

# (nll_new, nll_true): mean negative log-probability per token of the new and the true target.
NllPair = tuple[float, float]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def success_magnitude(pairs: Sequence[NllPair], want_new: bool) -> tuple[float, float]:
    """ROME's success and magnitude over prompts: the fraction where the wanted target is more likely, and the
    mean of P(wanted) - P(other), with P = exp(-mean token NLL)."""
    signed = [(n, t) if want_new else (t, n) for n, t in pairs]
    success = _mean([w < o for w, o in signed])
    magnitude = _mean([math.exp(-w) - math.exp(-o) for w, o in signed])
    return success, magnitude


def counterfact_metrics(rewrite: Sequence[NllPair], paraphrase: Sequence[NllPair], neighborhood: Sequence[NllPair]):
    """ES/EM on the rewrite prompt, PS/PM on paraphrases (new target wanted); NS/NM on neighbours (true wanted)."""
    es, em = success_magnitude(rewrite, want_new=True)
    ps, pm = success_magnitude(paraphrase, want_new=True)
    ns, nm = success_magnitude(neighborhood, want_new=False)
    return {"ES": es, "PS": ps, "NS": ns, "EM": em, "PM": pm, "NM": nm}


def token_accuracy(correct: Sequence[Sequence[bool]]) -> float:
    """zsRE's accuracy: the fraction of target tokens, pooled over the prompts, that are the top-1 prediction."""
    return _mean([c for row in correct for c in row])


def prompt_accuracy(correct: Sequence[Sequence[bool]]) -> float:
    """EasyEdit's accuracy: per prompt, the fraction of target tokens predicted top-1; averaged over prompts."""
    return _mean([_mean(row) for row in correct])


def locality(pre: Sequence[Sequence[int]], post: Sequence[Sequence[int]]) -> float:
    """EasyEdit's locality: per prompt, the fraction of positions whose top-1 token is unchanged by the edit;
    averaged over prompts."""
    return _mean([_mean([a == b for a, b in zip(x, y, strict=True)]) for x, y in zip(pre, post, strict=True)])


# nltk's Treebank rules for what GE counts: clitics split off ("France's" → France 's, "can't" → ca n't),
# every punctuation mark its own token. Not nltk itself: its `word_tokenize` needs the punkt download.
_WORDS = re.compile(r"\w+(?=n't\b)|n't\b|'(?:s|m|d|ll|re|ve)\b|\w+|[^\w\s]", re.IGNORECASE)


def words(text: str) -> list[str]:
    """Word and punctuation tokens as nltk's `word_tokenize` (ROME's GE tokenizer) splits English text."""
    return _WORDS.findall(text)


def ngram_entropy_one(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """ROME's generation entropy of one text: the mean over n of weight_n x entropy (bits) of its n-grams."""
    toks = words(text)
    parts = []
    for n, w in zip(ns, weights, strict=True):
        counts = np.array(list(Counter(zip(*(toks[i:] for i in range(n)), strict=False)).values()), dtype=float)
        p = counts / counts.sum() if counts.size else np.ones(1)
        parts.append(w * float(-(p * np.log2(p)).sum()))
    return float(np.mean(parts))


def ngram_entropy(texts: Sequence[str]) -> float:
    """GE: the arithmetic mean of `ngram_entropy_one` over generated texts."""
    return _mean([ngram_entropy_one(t) for t in texts])


def tfidf_similarity(text_a: str, text_b: str, vectorizer) -> float:
    """RS: cosine similarity of the two texts' TF-IDF vectors (0 when either has no known word)."""
    a, b = vectorizer.transform([text_a, text_b]).toarray()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm else 0.0


def harmonic_mean(values: Sequence[float]) -> float:
    """The harmonic mean (0 if any value is 0), as `scipy.stats.hmean` in ROME's summaries."""
    return 0.0 if min(values) <= 0 else len(values) / sum(1 / v for v in values)


# The range each bounded metric lives in; its interval is clipped to it.
BOUNDS = {"EM": (-1.0, 1.0), "PM": (-1.0, 1.0), "NM": (-1.0, 1.0), "GE": (0.0, math.inf)}


def mean_ci(values: Sequence[float], bounds: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Mean and normal-approximation 95% interval (mean ± 1.96 standard errors, clipped to `bounds`)."""
    x = np.asarray(values, dtype=float)
    m = float(x.mean())
    half = 1.96 * float(x.std(ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return {"mean": m, "ci95": [max(bounds[0], m - half), min(bounds[1], m + half)]}


# Score S: the harmonic mean of these per-suite metrics' means.
SCORE_PARTS = {"counterfact": ("ES", "PS", "NS")}


def bootstrap_score_ci(cases: Sequence[dict], parts: Sequence[str], resamples: int = 1000, seed: int = 0) -> list:
    """95% percentile-bootstrap interval of the harmonic mean of `parts`' means, resampling cases (seeded)."""
    x = np.array([[c[p] for p in parts] for c in cases], dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    scores = [harmonic_mean(list(x[i].mean(0))) for i in idx]
    return [float(np.percentile(scores, 2.5)), float(np.percentile(scores, 97.5))]


def summarize(cases: Sequence[dict], suite: str) -> dict:
    """`{"n": N, "metrics": {name: {"mean", "ci95"}}}` over per-case metric dicts (pass them in case order:
    the bootstrap of Score S depends on it); a metric missing from any case is left out. A case whose value
    is None or NaN (e.g. a record with no paraphrases) is left out of that metric and counted in its
    `missing`; a metric no case has is `{"mean": null, "ci95": null, "missing": N}` (never NaN)."""
    if not cases:
        raise EditkitError("no cases to summarize; run the evaluation first (editkit eval ...)")
    names = [k for k in cases[0] if all(k in c and (c[k] is None or isinstance(c[k], int | float)) for c in cases)]
    metrics = {}
    if suite in SCORE_PARTS:
        parts = SCORE_PARTS[suite]
        whole = [c for c in cases if all(_has(c, p) for p in parts)]
        metrics["S"] = _with_missing(
            {"mean": harmonic_mean([float(np.mean([c[p] for c in whole])) for p in parts]),
             "ci95": bootstrap_score_ci(whole, parts)} if whole else None,
            len(cases) - len(whole),
        )  # fmt: skip
    for k in names:
        values = [c[k] for c in cases if _has(c, k)]
        metrics[k] = _with_missing(
            mean_ci(values, BOUNDS.get(k, (0.0, 1.0))) if values else None, len(cases) - len(values)
        )
    return {"n": len(cases), "metrics": metrics}


def _has(case: dict, k: str) -> bool:
    return case.get(k) is not None and math.isfinite(case[k])


def _with_missing(summary: dict | None, missing: int) -> dict:
    summary = summary or {"mean": None, "ci95": None}
    return {**summary, "missing": missing} if missing else summary
