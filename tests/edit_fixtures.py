"""Fixtures shared by the edit tests: a word-level tokenizer small enough for the tiny random models, a tiny
corpus, and hyper-parameters that make a 2-layer random model flip in a few steps."""

from __future__ import annotations

import dataclasses

import torch

from editkit.edit.hparams import build

WORDS = (
    "<eos> <unk> the a of in is was met saw I we Bob Smith Ann Lee Paris Rome London harp piano violin cat mat "
    "sat on and looked at number lives plays Therefore Because You The . , 0 1 2 3 4 5 6 7 8 9 city river"
).split()

#: Prompts end with the subject, so δ at the subject's last token feeds the prediction directly (a random
#: 2-layer model barely carries information between positions).
TINY_REQUEST = dict(prompt="I met {}", subject="Bob Smith", target_new="Paris", target_true="Rome")


def word_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")


def tiny_corpus(path) -> str:
    lines = [
        f"the cat number {i % 10} sat on the mat and looked at {i % 7} . I saw Ann Lee in Rome" for i in range(300)
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


#: Strong, short settings for 2-layer random models (their hidden states are tiny, so no clamp/decay), by field:
#: each method gets those its hparams class has, except fields it leaves off (None, as FT's norm_constraint).
TINY_VALUES = dict(
    layers=[0, 1],
    lr=0.05,
    num_steps=10,
    norm_constraint=0.05,
    mom2_n_tokens=3000,
    v_num_grad_steps=12,
    v_lr=0.5,
    v_weight_decay=0.0,
    clamp_norm_factor=1000.0,
    context_templates=[[2, 1]],
    mom2_update_weight=1.0,
    nullspace_threshold=1e-2,
    L2=1e-3,
    k=0,  # IKE: no demonstration pool for the word-level tokenizer; the context is the new fact
)


#: ... and by method, where a field means something else there (UltraEdit's lr scales its pseudo values) or the
#: tiny scale needs other values: WISE steps its side memory by plain SGD, and the tiny models' MLP inputs (norm
#: ~0.01) need far more than EasyEdit's edit_lr 1.0 to flip in 70 steps; its routing margins (absolute
#: activation norms, EasyEdit's [5, 20, 10] for 7B models) scaled down likewise, else the edit-side margin
#: keeps growing the side memory until a soft-capped model (Gemma 2) saturates.
TINY_METHOD_VALUES = {"ultraedit": {"lr": 0.1}, "wise": {"edit_lr": 100.0, "act_margin": [0.05, 0.2, 0.1]}}

#: Requests edited together with TINY_REQUEST by methods that normalise over their batch (UltraEdit: a request
#: alone is its own mean, so it normalises to zero); with these 7, UltraEdit flips TINY_REQUEST on every family.
TINY_COMPANIONS = {
    "ultraedit": [
        ("we saw {}", "Ann Lee", "harp"),
        ("I saw {}", "the cat", "piano"),
        ("we met {}", "the mat", "violin"),
        ("I looked at {}", "the river", "city"),
        ("we looked at {}", "the city", "river"),
        ("I saw {}", "a cat", "harp"),
        ("we saw {}", "a mat", "piano"),
    ]
}


def tiny_hparams(method: str, corpus: str):
    """`method`'s hyper-parameters for the tiny random models, statistics from `corpus`; a side-memory
    method (GRACE, WISE) reads one layer, the last, with its own norm_constraint."""
    from editkit.edit import METHODS

    defaults = dataclasses.asdict(build(method, {}))
    values = {**TINY_VALUES, **TINY_METHOD_VALUES.get(method, {}), "mom2_corpus": corpus}
    if METHODS[method].changes == "memory":  # their own norm_constraint (WISE: ±1 per entry) is kept
        values["layers"] = [1]
        del values["norm_constraint"]
    return build(method, {k: v for k, v in values.items() if k in defaults and defaults[k] is not None})


# With two cores shared by several processes, torch's default intra-op threads spin against each other: a
# tiny model's forward pass takes ~1.7 s with 2 threads and ~17 ms with 1 on this machine.
torch.set_num_threads(1)
