"""Inspecting one SAE feature: its top-activating corpus contexts, and the tokens its decoder direction
promotes or suppresses through the unembedding (logit lens: W_U (γ ⊙ d), γ the final norm's scale)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import asdict, dataclass, field

import torch

from editkit.features.hookpoints import hook_value, resolve_hook, trace_hook
from editkit.features.sae import SAE
from editkit.features.store import keep_mask, tokenize
from editkit.io import atomic_write_text
from editkit.models import get_module


@dataclass
class Context:
    """Tokens around the activating one (`position` indexes `tokens`), the feature's activation there, and
    its activation at each of `tokens` (`values`, for highlighting)."""

    tokens: list[str]
    position: int
    activation: float
    values: list[float] = field(default_factory=list)


@dataclass
class FeatureReport:
    feature: int
    hook_name: str
    contexts: list[Context]
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    activations: list[float] = field(default_factory=list, repr=False)
    density: float = 0.0

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "activations"}


@torch.no_grad()
def scan_features(
    model, tokenizer, adapter, sae: SAE, features: list[int], texts: list[str], n: int = 10, window: int = 8
) -> dict[int, tuple[list[Context], torch.Tensor, float]]:
    """For each of `features`, in one pass over `texts`: the `n` token positions where it is largest (one
    per text) with `window` tokens of context on each side, every non-zero activation seen (for a
    histogram), and its density (share of tokens where it is active)."""
    hook = resolve_hook(adapter, sae.cfg.hook_name)
    for feature in features:
        sae.check_feature(feature)
    bos = sae.bos(tokenizer)
    device = next(model.parameters()).device
    best: dict[int, list[tuple[float, list[int], list[float], int]]] = {i: [] for i in features}
    seen: dict[int, list[torch.Tensor]] = {i: [] for i in features}
    n_tokens = 0
    for start in range(0, len(texts), 32):
        ids, mask = tokenize(tokenizer, texts[start : start + 32], sae.cfg.context_size, bos)
        with trace_hook(model, hook, stop=True) as tr:
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
        keep = keep_mask(ids, mask, tokenizer, skip_bos=True)
        acts = sae.encode(hook_value(tr, hook))[..., features].cpu() * keep[..., None]
        n_tokens += int(keep.sum())
        for j, feature in enumerate(features):
            f = acts[..., j]
            seen[feature].append(f[f > 0])
            values, pos = f.max(dim=1)
            best[feature] += [
                (v, ids[r, : int(mask[r].sum())].tolist(), f[r, : int(mask[r].sum())].tolist(), p)
                for r, (v, p) in enumerate(zip(values.tolist(), pos.tolist(), strict=True))
                if v > 0
            ]
            best[feature] = sorted(best[feature], key=lambda b: -b[0])[:n]
    out = {}
    for feature in features:
        contexts = [
            Context(
                [tokenizer.decode([t]) for t in row[max(0, p - window) : p + window + 1]],
                min(p, window),
                v,
                values[max(0, p - window) : p + window + 1],
            )
            for v, row, values, p in best[feature]
        ]
        acts = torch.cat(seen[feature]) if seen[feature] else torch.zeros(0)
        out[feature] = (contexts, acts, len(acts) / max(1, n_tokens))
    return out


def top_contexts(
    model, tokenizer, adapter, sae: SAE, feature: int, texts: list[str], n: int = 10, window: int = 8
) -> tuple[list[Context], torch.Tensor, float]:
    """`scan_features` for one feature."""
    return scan_features(model, tokenizer, adapter, sae, [feature], texts, n, window)[feature]


@torch.no_grad()
def logit_lens(model, tokenizer, adapter, sae: SAE, feature: int, k: int = 10):
    """(promoted, suppressed): the `k` tokens whose logits the feature's direction raises / lowers most."""
    d = sae.direction(feature).float()
    gamma = adapter.final_norm_gain(model)
    if gamma is not None:
        d = d * gamma.float().to(d.device)
    logits = get_module(model, adapter.unembed).weight.detach().float() @ d.to(next(model.parameters()).device)
    top, bottom = logits.topk(k), logits.topk(k, largest=False)
    as_list = lambda t: [(tokenizer.decode([i]), v) for v, i in zip(t.values.tolist(), t.indices.tolist(), strict=True)]  # noqa: E731
    return as_list(top), as_list(bottom)


def inspect_feature(model, tokenizer, adapter, sae: SAE, feature: int, texts: list[str], n: int = 10) -> FeatureReport:
    """Top contexts, logit lens and activation statistics of `feature` over `texts`."""
    contexts, acts, density = top_contexts(model, tokenizer, adapter, sae, feature, texts, n)
    promoted, suppressed = logit_lens(model, tokenizer, adapter, sae, feature)
    return FeatureReport(feature, sae.cfg.hook_name, contexts, promoted, suppressed, acts.tolist(), density)


def histogram_png(report: FeatureReport) -> str:
    """The feature's activation histogram (where > 0) as a base64 PNG, for inline <img> tags."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.hist(report.activations or [0], bins=40)
    ax.set(xlabel="activation (where > 0)", ylabel="tokens", title=f"feature {report.feature}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_html(report: FeatureReport, path) -> None:
    """A one-page report: activation histogram, top contexts (activating token marked), logit lens."""
    png = histogram_png(report)
    rows = "".join(
        "<li>{:.2f}: {}</li>".format(
            c.activation,
            "".join(
                f"<mark>{html.escape(t)}</mark>" if i == c.position else html.escape(t) for i, t in enumerate(c.tokens)
            ),
        )
        for c in report.contexts
    )
    lens = lambda items: ", ".join(f"{html.escape(t)!s} ({v:+.2f})" for t, v in items)  # noqa: E731
    page = (
        f"<!doctype html><meta charset='utf-8'><title>feature {report.feature}</title>"
        f"<h1>Feature {report.feature} at {html.escape(report.hook_name)}</h1>"
        f"<p>active on {report.density:.2%} of tokens</p>"
        f"<img src='data:image/png;base64,{png}'>"
        f"<h2>Top contexts</h2><ol>{rows}</ol>"
        f"<h2>Logit lens</h2><p>promotes: {lens(report.promoted)}</p><p>suppresses: {lens(report.suppressed)}</p>"
    )
    atomic_write_text(path, page)
