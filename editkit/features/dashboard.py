"""Static HTML dashboards over many SAE features: an index page and one page per feature.

Each feature page shows its top-activating corpus contexts (every token shaded by the feature's activation
there, the peak marked), its activation histogram, the output tokens its decoder direction promotes and
suppresses (logit lens), and the facts it carries: for each fact, logit(true) − logit(new) is attributed
to every feature at every position by activation × gradient (`attribution.attribute_features`), and the
facts where this feature is among the top attributions are listed with the measured effect of ablating
it. Pages are plain HTML with inline images, readable offline; the directory appears whole (atomically).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import torch

from editkit.errors import EditkitError
from editkit.features.attribution import FeatureScore, attribute_features
from editkit.features.hookpoints import resolve_hook
from editkit.features.inspect import Context, FeatureReport, histogram_png, logit_lens, scan_features
from editkit.features.sae import SAE
from editkit.features.store import hook_activations
from editkit.io import atomic_directory

STYLE = (
    "body{font-family:sans-serif;max-width:70em;margin:1em auto}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}.tok{white-space:pre}"
    "mark{outline:2px solid #c00;background:transparent}"
)


@dataclass
class FactHit:
    """A fact whose answer a feature carries: the fact's prompt and answers, and the feature's score there."""

    prompt: str
    target: str
    target_alt: str
    metric: float
    score: FeatureScore


@dataclass
class FeaturePage:
    report: FeatureReport
    facts: list[FactHit] = field(default_factory=list)

    @property
    def max_activation(self) -> float:
        return max((c.activation for c in self.report.contexts), default=0.0)


@torch.no_grad()
def densest_features(model, tokenizer, adapter, sae: SAE, texts: list[str], n: int) -> list[int]:
    """The `n` features active on the most tokens of `texts` (ties by index; never-active ones left out),
    the dashboard's default choice."""
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    device = next(model.parameters()).device
    counts = torch.zeros(sae.cfg.d_sae)
    bos = sae.bos(tokenizer)
    for start in range(0, len(texts), 32):
        x = hook_activations(model, tokenizer, hook, texts[start : start + 32], sae.cfg.context_size, bos=bos)
        counts += (sae.encode(x.to(device)).cpu() > 0).sum(0).float()
    ranked = sorted(range(sae.cfg.d_sae), key=lambda i: (-counts[i].item(), i))
    return [i for i in ranked[:n] if counts[i] > 0]


def fact_hits(model, tokenizer, adapter, sae: SAE, facts, features: list[int], top: int = 20) -> dict[int, list]:
    """For each of `features`, the facts (records with `request()`) where it is among the `top` features by
    |attribution| of logit(true) − logit(new), with its measured ablation effect."""
    hits: dict[int, list[FactHit]] = {i: [] for i in features}
    for record in facts:
        r = record.request()
        if r.target_true is None:
            raise EditkitError(f"fact {r.text!r} has no true target; --facts needs CounterFact-layout records")
        result = attribute_features(
            model, tokenizer, adapter, sae, r.text, r.target_true, r.target_new, r.subject, top=top
        )
        for s in result.features:
            if s.feature in hits:
                hits[s.feature].append(FactHit(r.text, r.target_true, r.target_new, result.metric, s))
    return {i: sorted(h, key=lambda x: -abs(x.score.attribution)) for i, h in hits.items()}


def build_dashboard(
    model, tokenizer, adapter, sae: SAE, features: list[int], texts: list[str], facts=(), n_contexts: int = 10
) -> list[FeaturePage]:
    """One page's content per feature of `features`: contexts and histogram over `texts`, logit lens, and
    the `facts` it carries."""
    if not features:
        raise EditkitError("no features to show; pass --features 3,17 or --top-n N (and a corpus where they fire)")
    scans = scan_features(model, tokenizer, adapter, sae, features, texts, n_contexts)
    hits = fact_hits(model, tokenizer, adapter, sae, facts, features) if facts else {i: [] for i in features}
    pages = []
    for i in features:
        contexts, acts, density = scans[i]
        promoted, suppressed = logit_lens(model, tokenizer, adapter, sae, i)
        report = FeatureReport(i, sae.cfg.hook_name, contexts, promoted, suppressed, acts.tolist(), density)
        pages.append(FeaturePage(report, hits[i]))
    return pages


def _context_html(c: Context, scale: float) -> str:
    spans = []
    for j, (t, v) in enumerate(zip(c.tokens, c.values, strict=True)):
        alpha = min(1.0, max(0.0, v / scale)) if scale > 0 else 0.0
        text = html.escape(t)
        if j == c.position:
            text = f"<mark>{text}</mark>"
        spans.append(f"<span class='tok' style='background:rgba(255,120,0,{alpha:.2f})' title='{v:.3f}'>{text}</span>")
    return f"<li class='context'><b>{c.activation:.2f}</b> {''.join(spans)}</li>"


def _lens_rows(items: list[tuple[str, float]]) -> str:
    return "".join(f"<tr><td class='tok'>{html.escape(repr(t))}</td><td>{v:+.3f}</td></tr>" for t, v in items)


def feature_html(page: FeaturePage, sae_name: str) -> str:
    """The page of one feature."""
    r = page.report
    scale = page.max_activation
    facts = "".join(
        f"<tr class='fact'><td>{html.escape(h.prompt)}</td><td>{html.escape(h.target)} vs {html.escape(h.target_alt)}"
        f"</td><td class='tok'>{html.escape(repr(h.score.token))}</td><td>{h.score.activation:.2f}</td>"
        f"<td>{h.score.attribution:+.3f}</td><td>{h.score.ablation:+.3f}</td></tr>"
        for h in page.facts
    )
    return (
        f"<!doctype html><meta charset='utf-8'><title>feature {r.feature}</title><style>{STYLE}</style>"
        f"<p><a href='index.html'>all features</a> · {html.escape(sae_name)}</p>"
        f"<h1>Feature {r.feature} at {html.escape(r.hook_name)}</h1>"
        f"<p id='density'>active on {r.density:.2%} of tokens; largest activation seen {scale:.2f}</p>"
        "<img id='histogram' alt='activation histogram' onload='this.dataset.width=this.naturalWidth' "
        f"src='data:image/png;base64,{histogram_png(r)}'>"
        f"<h2>Top-activating contexts</h2><ol id='contexts'>{''.join(_context_html(c, scale) for c in r.contexts)}</ol>"
        "<h2>Logit lens</h2><table id='promoted'><tr><th>promotes</th><th>logit</th></tr>"
        f"{_lens_rows(r.promoted)}</table><table id='suppressed'><tr><th>suppresses</th><th>logit</th></tr>"
        f"{_lens_rows(r.suppressed)}</table>"
        "<h2>Facts it carries</h2><p>attribution (activation × gradient) of logit(true) − logit(new), and the "
        "change of that difference when the feature is ablated at that token</p><table id='facts'><tr><th>prompt</th>"
        "<th>true vs new</th><th>token</th><th>activation</th><th>attribution</th><th>ablated Δ</th></tr>"
        f"{facts}</table>"
    )


def index_html(pages: list[FeaturePage], sae_name: str, hook_name: str) -> str:
    """The index over every feature page."""
    rows = "".join(
        f"<tr class='feature'><td><a href='feature-{p.report.feature}.html'>{p.report.feature}</a></td>"
        f"<td>{p.report.density:.2%}</td><td>{p.max_activation:.2f}</td>"
        f"<td class='tok'>{html.escape(', '.join(repr(t) for t, _ in p.report.promoted[:5]))}</td>"
        f"<td>{len(p.facts)}</td></tr>"
        for p in pages
    )
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(sae_name)}</title><style>{STYLE}</style>"
        f"<h1>{html.escape(sae_name)}</h1><p>{len(pages)} features at {html.escape(hook_name)}</p>"
        "<table id='features'><tr><th>feature</th><th>density</th><th>max activation</th><th>promotes</th>"
        f"<th>facts</th></tr>{rows}</table>"
    )


def write_dashboard(pages: list[FeaturePage], sae_name: str, hook_name: str, out: str | Path) -> Path:
    """`out/index.html` and `out/feature-<i>.html`, written into a temporary directory and renamed."""
    with atomic_directory(out, replace_if="index.html") as tmp:
        (tmp / "index.html").write_text(index_html(pages, sae_name, hook_name), encoding="utf-8")
        for p in pages:
            (tmp / f"feature-{p.report.feature}.html").write_text(feature_html(p, sae_name), encoding="utf-8")
    return Path(out)
