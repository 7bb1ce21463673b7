"""Tiny language models and a small corpus for the text passes' tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import randomise_

WORDS = (  # noqa: SIM905 (a vocabulary reads best as words)
    "the a of to and in is that it for as with be by on not this are or an which object name value if can from "
    "list function class statement expression type attribute method when its must any all has into than each"
).split()
TEXT = """The value of an expression is the object that the expression yields when it is evaluated.

A class statement defines a class object; its methods are functions in the class namespace.

When a name is not found in any namespace, an exception is raised and the statement is not completed.

Each list has a length, and the items of a list are objects of any type that the program can use.

Comments start with a hash character.

If the attribute is not found on the object, the method of its type is called with the name as argument.
"""


def write_tokenizer(folder: Path) -> int:
    """A small word-piece tokenizer (BERT style) saved with save_pretrained; returns its vocabulary size."""
    from transformers import BertTokenizerFast

    letters = list("abcdefghijklmnopqrstuvwxyz.,;:()'")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *(f"##{c}" for c in letters)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    return len(vocab)


def make_tiny_text_model(folder: Path, kind: str) -> str:
    """A tiny random BERT encoder or GPT-2 decoder (every parameter random) with a tokenizer, as a save_pretrained
    directory; returns its spec."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    n_vocab = write_tokenizer(folder)
    if kind == "bert":
        cfg: Any = BertConfig(vocab_size=n_vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=160)  # fmt: skip
        model: Any = BertModel(cfg)
    else:
        cfg = GPT2Config(vocab_size=n_vocab, n_embd=32, n_layer=3, n_head=4, n_positions=160,
                         scale_attn_by_inverse_layer_idx=True, bos_token_id=2, eos_token_id=3)  # fmt: skip
        model = GPT2Model(cfg)
    randomise_(model, std=0.2).save_pretrained(str(folder))
    return f"hf:{folder}"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus :data:`TEXT` as a text file, one passage a paragraph."""
    path = tmp_path_factory.mktemp("corpus") / "texts.txt"
    path.write_text(TEXT)
    return path
