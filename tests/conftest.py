"""Shared fixtures: tiny seeded random models of every registered family, and the shipped toy model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from editkit.models import load_model
from editkit.models.families import FAMILIES

#: every registered family's tiny random configuration (editkit.models.families)
TINY_CONFIGS = {name: f.tiny_config for name, f in FAMILIES.items()}


def tiny_model(family: str, seed: int = 0):
    """A seeded random model of `family` in eval mode, small enough to build and run in well under 1 s."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS[family]())
    return model.eval()


def tiny_opt():
    """A model of a family editkit does not support (OPT), for the unknown-architecture errors."""
    from transformers import OPTConfig, OPTForCausalLM

    return OPTForCausalLM(
        OPTConfig(
            vocab_size=64,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            max_position_embeddings=32,
            word_embed_proj_dim=16,
        )
    )


@pytest.fixture(scope="session")
def toy():
    """The shipped toy model, loaded once: (model, tokenizer, adapter)."""
    return load_model("toy", device="cpu")


_TOKENIZER_TEXT = [
    "The Eiffel Tower is located in the city of Paris.",
    "Danielle Darrieux's mother tongue is French.",
    "Talin Vorsk plays the violin, and Talin Vorsk lives in Dorran.",
    "The capital city of the Arvel Republic is Kestra.",
] * 20


def _save_and_reload(tok_object, path, **special):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok_object, **special).save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="session")
def tokenizers_on_disk(tmp_path_factory, toy):
    """Real tokenizer files of three kinds, each saved to disk and loaded back with AutoTokenizer:
    the toy model's byte-level BPE (GPT-2 scheme), a word-level tokenizer, and a SentencePiece-style
    BPE with '▁' word starts and a BOS token (the Llama scheme)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    root = tmp_path_factory.mktemp("tokenizers")
    word = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    word.pre_tokenizer = pre_tokenizers.Whitespace()
    word.train_from_iterator(_TOKENIZER_TEXT, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))

    spm = Tokenizer(models.BPE(unk_token="<unk>"))
    spm.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    spm.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    spm.train_from_iterator(
        _TOKENIZER_TEXT, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"])
    )
    spm.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", spm.token_to_id("<s>"))]
    )
    return {
        "bpe": toy[1],
        "word": _save_and_reload(word, root / "word", unk_token="[UNK]", pad_token="[PAD]"),
        "spm": _save_and_reload(spm, root / "spm", unk_token="<unk>", bos_token="<s>", eos_token="</s>"),
    }


@pytest.fixture(scope="session")
def toy_world():
    from editkit.demo import load_toy_world

    return load_toy_world()


@pytest.fixture
def toy_world_fact(toy_world):
    """A fact of the paraphrase-unseen half and its first training template."""
    fact = next(f for f in toy_world.facts if not f.paraphrase_seen and f.relation_id == "P1303")
    return fact, toy_world.relations[fact.relation_id]["train_templates"][0]
