"""Knowledge neurons on the toy model: integrated gradients add up, and the neurons found matter."""

import numpy as np
import pytest
import torch

from editkit.errors import EditkitError
from editkit.hooks import Trace
from editkit.locate.neurons import integrated_gradients, knowledge_neurons, probs_with_neurons
from editkit.tokens import encode, target_ids


@pytest.fixture(scope="module")
def fact(toy_world):
    f = next(f for f in toy_world.facts if f.relation_id == "P1303")
    templates = toy_world.relations["P1303"]["train_templates"]
    return [t.format(f.subject) for t in templates[:3]], f.object


def _p_with_layer_zeroed(model, tok, adapter, prompt, target, layer):
    ids = torch.tensor([encode(tok, prompt)])

    def zero_last(x, n):
        x = x.clone()
        x[:, -1] = 0
        return x

    names = [adapter.name("mlp_out", layer)] if layer is not None else []
    with torch.no_grad(), Trace(model, names, retain_output=False, edit_input=zero_last):
        logits = model(input_ids=ids).logits[0, -1]
    return torch.softmax(logits, -1)[target_ids(tok, prompt, target)[0]].item()


def test_integrated_gradients_are_complete(toy, fact):
    """Σ attributions of a layer ≈ p(target) − p(target with that layer's activations at zero)."""
    model, tok, adapter = toy
    prompt, target = fact[0][0], fact[1]
    ig = integrated_gradients(model, tok, adapter, prompt, target, steps=40)
    assert ig.shape[0] == adapter.n_layers
    p = _p_with_layer_zeroed(model, tok, adapter, prompt, target, None)
    for layer in (0, adapter.n_layers // 2, adapter.n_layers - 1):
        expected = p - _p_with_layer_zeroed(model, tok, adapter, prompt, target, layer)
        assert ig[layer].sum() == pytest.approx(expected, abs=0.05 + 0.1 * abs(expected))


def test_knowledge_neurons_matter(toy, fact):
    """Suppressing the neurons found lowers p(target) on every prompt, far more than suppressing as many
    random neurons of the same layers; amplifying them raises it."""
    model, tok, adapter = toy
    prompts, target = fact
    r = knowledge_neurons(*toy, prompts, target, steps=10)
    assert 0 < len(r.neurons) < 200
    base, down, up = map(np.array, (r.base_probs, r.suppressed_probs, r.amplified_probs))
    assert np.all(base > 0.5) and np.all(down < base) and np.all(up > base)
    d_mlp = r.scores.shape[2]
    rng = np.random.default_rng(0)
    random_neurons = [(layer, int(rng.integers(d_mlp))) for layer, _ in r.neurons]
    control = np.array(probs_with_neurons(model, tok, adapter, prompts, target, random_neurons, 0.0))
    assert (base - down).mean() > 5 * np.abs(base - control).mean()
    with pytest.raises(EditkitError, match="no prompts given"):
        knowledge_neurons(*toy, [], target)
