"""Shared by the evaluation tests: a tiny seeded GPT-2 with a small byte-level BPE tokenizer (so answers are
several tokens long), built in well under a second, and paths to the shipped benchmark prefixes."""

from __future__ import annotations

from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"
TEXT = [
    "The mother tongue of Danielle Darrieux is French. Danielle Darrieux speaks English at work.",
    "Toko Yasuda plays the guitar and the piano. Michel Rocard is a native speaker of French.",
    "What university did Watts Humphrey attend? Illinois Institute of Technology. Hugo Weaving.",
] * 30


def tiny_bundle(tmp_path: Path, seed: int = 0):
    """(model, tokenizer): a 2-layer GPT-2 over a 300-token BPE vocabulary, random weights fixed by `seed`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(TEXT, trainer)
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    torch.manual_seed(seed)
    eos = tok.eos_token_id
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_inner=64,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    return GPT2LMHeadModel(config).eval(), tok
