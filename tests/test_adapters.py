"""Adapter errors: an unknown architecture, a layer out of range, a bad kind or module name. (What every
family's adapter must do is checked for each registered family in tests/test_conformance.py.)"""

import pytest

from editkit.errors import EditkitError
from editkit.models import FAMILIES, adapter_for, get_module
from tests.conftest import tiny_model, tiny_opt


def test_unknown_architecture_is_a_clear_error():
    model = tiny_opt()
    with pytest.raises(EditkitError, match=r"unsupported architecture OPTForCausalLM \(model_type 'opt'\)") as e:
        adapter_for(model)
    assert str(e.value).endswith("editkit supports the families: " + ", ".join(FAMILIES))


def test_bad_layer_and_kind_name_the_value():
    a = adapter_for(tiny_model("gpt2"))
    with pytest.raises(EditkitError, match="layer 7 out of range: the model has 2 layers"):
        a.name("mlp", 7)
    with pytest.raises(EditkitError, match="unknown module kind 'mlpp'"):
        a.name("mlpp", 0)
    with pytest.raises(EditkitError, match="has no module 'transformer.h.0.mlp.nope'"):
        get_module(tiny_model("gpt2"), "transformer.h.0.mlp.nope")
