"""One tokenization: the ids edgespike trains, validates and profiles on are ``tokenizer.encode(text)``'s."""

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models as tk_models, pre_tokenizers

from edgespike import data
from edgespike.errors import EdgespikeError
from edgespike.models import load

# text rich in what pre-tokenizers treat specially: runs of spaces and newlines, indentation, tabs,
# punctuation, digits, contractions, non-ASCII letters and other Unicode whitespace
PIECES = st.sampled_from([" ", "  ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u2028", "x", "def", ">>>", "'s", "3.14",
                          "é", "日本", "(", ")", ":", "-", "<|endoftext|>", "    return"])
TEXTS = st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=60).map("".join)


@pytest.fixture(scope="module")
def tokenizers():
    corpus = data.read_corpus()[:60_000]
    return {"demo": load("demo").tokenizer, "bpe": data.train_tokenizer(corpus, "bpe", 300),
            "char": data.train_tokenizer(corpus + "".join(chr(c) for c in range(32, 0x250)), "char", 1024)}


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(text=TEXTS, chunk_chars=st.integers(1, 40), count=st.integers(1, 30))
def test_chunked_encoding_is_the_whole_texts(tokenizers, text, chunk_chars, count):
    for tokenizer in tokenizers.values():
        whole = tokenizer.encode(text).ids
        assert data.encode(tokenizer, text, chunk_chars).tolist() == whole
        assert data.first_tokens(tokenizer, text, count) == whole[:count]


def test_the_corpus_encodes_whole_and_lines_would_not(tokenizers):
    tokenizer, text = tokenizers["demo"], data.read_corpus()
    assert len(data.chunk_boundaries(text)) >= 5  # the default pieces are really cut
    assert data.encode(tokenizer, text).tolist() == tokenizer.encode(text).ids
    assert data.check_chunking(tokenizer, text)["checked_pieces"] > 1000
    line_wise = [i for e in tokenizer.encode_batch(text.splitlines(keepends=True)) for i in e.ids]
    assert line_wise != tokenizer.encode(text).ids  # what the demo was trained on, and serving never sees
    held_out = data.split_corpus(text)[1]
    assert data.first_tokens(tokenizer, held_out, 256) == tokenizer.encode(held_out).ids[:256]


def _merging_tokenizer() -> Tokenizer:
    """A pre-tokenizer that splits only at spaces: a word runs on across a line break."""
    tokenizer = Tokenizer(tk_models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", behavior="isolated")
    return tokenizer


def test_a_tokenizer_that_merges_across_lines_is_refused():
    with pytest.raises(EdgespikeError, match="cut at line breaks differently from the whole text"):
        data.check_chunking(_merging_tokenizer(), "a b\nb a\n" * 4)


def test_train_refuses_it_in_one_line_and_records_the_tokenization(tmp_path, monkeypatch, capsys):
    from edgespike import cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the model reads\nthe text.\n" * 200)
    monkeypatch.setattr(data, "train_tokenizer", lambda *args: _merging_tokenizer())
    monkeypatch.setattr(sys, "argv", ["edgespike", "train", "pulse", "--corpus", str(corpus), "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "cut at line breaks differently" in err and len(err.strip().splitlines()) == 1
    monkeypatch.undo()
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["edgespike", "train", "pulse", "--corpus", str(corpus), "--tokenizer", "char", "--steps",
                                      "2", "--seq-len", "16", "--batch-size", "2", "--eval-every", "2", "--out", str(out), "--json"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    tokenization = json.loads((out / "metrics.json").read_text())["tokenization"]
    assert tokenization["ids"] == "tokenizer.encode(text) of the whole text" and tokenization["checked_pieces"] == 400
