"""Corpora, tokenizers and the trainer: their results and their refusals."""

import pytest
import torch

from edgespike import data, models
from edgespike.errors import EdgespikeError
from edgespike.train import TrainOptions, lr_at, perplexity, train, unigram_perplexity


def test_default_corpus_is_pydoc_and_split_is_fixed():
    text = data.read_corpus()
    train_text, held_out = data.split_corpus(text)
    assert len(text) > 400_000 and "assert" in text
    assert train_text + held_out == text
    assert len(held_out) == pytest.approx(0.1 * len(text), abs=1)


def test_bpe_tokenizer_has_the_requested_vocab_and_round_trips():
    text = data.read_corpus()[:100_000]
    tokenizer = data.train_tokenizer(text, "bpe", 512)
    assert tokenizer.get_vocab_size() == 512
    sample = "The assert statement, naïve café ✓\n"
    assert tokenizer.decode(tokenizer.encode(sample).ids) == sample


def test_char_tokenizer_round_trips():
    tokenizer = data.train_tokenizer("abc de\nf", "char", 64)
    assert tokenizer.get_vocab_size() == 9  # 8 characters + <unk>
    assert tokenizer.decode(tokenizer.encode("fed cab\n").ids) == "fed cab\n"


def test_corpus_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(EdgespikeError, match="is empty"):
        data.read_corpus(tmp_path / "empty.txt")
    with pytest.raises(EdgespikeError, match="is not UTF-8"):
        data.read_corpus(tmp_path / "latin1.txt")
    with pytest.raises(EdgespikeError, match="neither 'pydoc' nor"):
        data.read_corpus(tmp_path / "missing.txt")


def test_vocab_larger_than_the_corpus_allows():
    with pytest.raises(EdgespikeError, match="supports only"):
        data.train_tokenizer("tiny corpus " * 10, "bpe", 4096)
    with pytest.raises(EdgespikeError, match="distinct characters"):
        data.train_tokenizer("abcdef", "char", 4)


def test_schedule_warms_up_then_decays():
    options = TrainOptions(steps=100, warmup=10, lr=1.0)
    assert lr_at(0, options) == pytest.approx(0.1)
    assert lr_at(9, options) == pytest.approx(1.0)
    assert lr_at(99, options) == pytest.approx(0.1, abs=1e-3)


def test_bad_options():
    with pytest.raises(EdgespikeError, match="--steps must be > 0"):
        TrainOptions(steps=0)


def _tiny_run(tmp_path, steps, family="pulse", resume=False):
    text = data.read_corpus()[:60_000]
    train_text, held_out = data.split_corpus(text)
    tokenizer = data.train_tokenizer(train_text, "bpe", 300)
    model = models.create(family, "tiny", vocab_size=300)
    options = TrainOptions(steps=steps, seq_len=32, batch_size=8, lr=1e-2, warmup=5, eval_every=10, eval_batches=2)
    ids, valid = data.encode(tokenizer, train_text), data.encode(tokenizer, held_out)
    return model, ids, valid, train(model, ids, valid, options, tmp_path, resume=resume)


def test_training_lowers_held_out_perplexity_and_resumes(tmp_path):
    model, ids, valid, result = _tiny_run(tmp_path, 30)
    val = [row["val_ppl"] for row in result.history if row["val_ppl"]]
    assert val[-1] < val[0] and val[-1] < 300 / 2  # well below uniform over the vocab
    assert perplexity(model, valid, 32, max_batches=2) == pytest.approx(result.final_val_ppl)
    assert unigram_perplexity(ids, valid, 300) < 300
    assert (tmp_path / "checkpoint" / "trainer.pt").is_file()
    _, _, _, resumed = _tiny_run(tmp_path, 40, resume=True)
    assert len(resumed.history) == 40 and resumed.history[29] == result.history[29]


def test_resume_from_another_family_is_refused(tmp_path):
    _tiny_run(tmp_path, 10)
    with pytest.raises(EdgespikeError, match="is a pulse model"):
        _tiny_run(tmp_path, 20, family="evospikenet", resume=True)


def test_corpus_smaller_than_one_sequence():
    model = models.create("pulse", "tiny")
    ids = torch.arange(10)
    with pytest.raises(EdgespikeError, match="fewer than one sequence"):
        train(model, ids, ids, TrainOptions(steps=1, seq_len=32), None)


def test_dropout_acts_in_training_only():
    """pulse's dropout (embedding and residual branches) changes the training forward and leaves the
    eval one, which every exporter captures, as the same weights without it."""
    torch.manual_seed(0)
    plain = models.create("pulse", "tiny")
    dropped = models.build(plain.config.replace(dropout=0.5))
    dropped.load_state_dict(plain.state_dict())
    tokens = torch.randint(0, plain.config.vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.equal(dropped.eval()(tokens)[0], plain.eval()(tokens)[0])
        assert not torch.allclose(dropped.train()(tokens)[0], plain.train()(tokens)[0])

