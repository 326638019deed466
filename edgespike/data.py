"""Corpora and tokenizers (HF ``tokenizers``).

Corpora: ``pydoc`` (the default: ``pydoc_data.topics``, ~465 KB of English prose that ships
with CPython, so every machine has it), or a text file, or a folder of text files. The last
``HELD_OUT_FRACTION`` of the text is the fixed validation split.

Tokenizers: byte-level BPE (vocab 1024 by default, as SLMS Pulse used) or char-level, both
saved as tokenizer.json beside the model.

One tokenization everywhere: training, validation, profile, generate and the app all use the ids
``tokenizer.encode(text)`` gives for the whole text (the demo was trained on line-by-line ids, which
differ around blank lines and indentation). Long corpora are encoded in pieces cut where no token can
span (``chunk_boundaries``), and ``edgespike train`` checks that the pieces give the whole's ids.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from edgespike.errors import EdgespikeError

DEFAULT_CORPUS = "pydoc"
HELD_OUT_FRACTION = 0.1
END_OF_TEXT = "<|endoftext|>"
UNKNOWN = "<unk>"
TOKENIZER_KINDS = ("bpe", "char")
CHUNK_CHARS = 1 << 16  # characters per piece when a long text is encoded in parallel
CHUNK_BOUNDARY = re.compile(r"(?<=\S\n)(?=\S)")  # a newline between two non-space characters


def read_corpus(spec: str | Path = DEFAULT_CORPUS) -> str:
    """The text of ``pydoc``, a UTF-8 file, or every file under a folder (sorted by path)."""
    if str(spec) == DEFAULT_CORPUS:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key].strip() for key in sorted(topics))
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise EdgespikeError(f"corpus folder {path} holds no files; point --corpus at text files")
        text = "\n\n".join(_read_text(p) for p in files)
    elif path.is_file():
        text = _read_text(path)
    else:
        raise EdgespikeError(f"corpus {str(spec)!r} is neither 'pydoc' nor an existing file or folder")
    if not text.strip():
        raise EdgespikeError(f"corpus {path} is empty; give it some text")
    return text


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise EdgespikeError(f"corpus file {path} is not UTF-8 (byte {err.start}); convert it to UTF-8") from None


def split_corpus(text: str) -> tuple[str, str]:
    """(train, held-out): the held-out part is the last HELD_OUT_FRACTION of the text."""
    cut = int(len(text) * (1.0 - HELD_OUT_FRACTION))
    return text[:cut], text[cut:]


def train_tokenizer(text: str, kind: str = "bpe", vocab_size: int = 1024) -> Tokenizer:
    """A byte-level BPE of exactly ``vocab_size`` tokens, or a char-level vocabulary."""
    if kind == "char":
        return _char_tokenizer(text, vocab_size)
    if kind != "bpe":
        raise EdgespikeError(f"unknown tokenizer kind {kind!r}; choose one of {TOKENIZER_KINDS}")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise EdgespikeError(f"a byte-level BPE needs vocab_size >= {len(alphabet) + 1} (256 bytes + end-of-text), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=alphabet, special_tokens=[END_OF_TEXT], show_progress=False
    )
    edges = [0, *chunk_boundaries(text), len(text)]
    tokenizer.train_from_iterator((text[a:b] for a, b in zip(edges, edges[1:])), trainer=trainer)
    if tokenizer.get_vocab_size() < vocab_size:
        raise EdgespikeError(
            f"the corpus supports only {tokenizer.get_vocab_size()} BPE tokens, fewer than vocab_size={vocab_size}; "
            "use a larger corpus or a smaller --vocab-size"
        )
    return tokenizer


def _char_tokenizer(text: str, vocab_size: int) -> Tokenizer:
    chars = sorted(set(text))
    if len(chars) + 1 > vocab_size:
        raise EdgespikeError(f"the corpus has {len(chars)} distinct characters; a char vocab needs vocab_size >= {len(chars) + 1}")
    vocab = {UNKNOWN: 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def chunk_boundaries(text: str, size: int = CHUNK_CHARS) -> list[int]:
    """Cut points splitting ``text`` into pieces of at least ``size`` characters, each at a newline between
    two non-space characters (``"x\\n|y"``): the pre-tokenizers of edgespike's tokenizers (byte-level BPE's
    GPT-2 pattern, the char split) never build a token across one, so the pieces encode to the whole's ids."""
    cuts, start = [], 0
    while start + size < len(text):
        match = CHUNK_BOUNDARY.search(text, start + size)
        if match is None:
            break
        cuts.append(start := match.end())
    return cuts


def encode(tokenizer: Tokenizer, text: str, chunk_chars: int = CHUNK_CHARS) -> torch.Tensor:
    """The ids ``tokenizer.encode(text)`` gives, as a 1-D int64 tensor; a long text is encoded in pieces
    cut at ``chunk_boundaries`` (in parallel), which ``check_chunking`` holds to the same ids."""
    edges = [0, *chunk_boundaries(text, chunk_chars), len(text)]
    ids: list[int] = []
    for encoding in tokenizer.encode_batch([text[a:b] for a, b in zip(edges, edges[1:])]):
        ids.extend(encoding.ids)
    return torch.tensor(ids, dtype=torch.long)


def first_tokens(tokenizer: Tokenizer, text: str, count: int) -> list[int]:
    """The first ``count`` ids of ``tokenizer.encode(text)``, encoding only as long a prefix as they need
    (cut at a chunk boundary, so its ids begin as the whole text's do)."""
    start = 16 * count
    while True:
        match = CHUNK_BOUNDARY.search(text, start)
        cut = match.start() if match else len(text)
        ids = tokenizer.encode(text[:cut]).ids
        if len(ids) >= count or cut == len(text):
            return ids[:count]
        start = 2 * cut


def check_chunking(tokenizer: Tokenizer, text: str) -> dict:
    """Refuse a tokenizer for which ``text`` cut at every ``chunk_boundaries`` newline encodes to other ids
    than ``tokenizer.encode(text)``; else what metrics.json records of the tokenization."""
    whole, chunked = tokenizer.encode(text).ids, encode(tokenizer, text, chunk_chars=1).tolist()
    if chunked != whole:
        at = next((i for i, (a, b) in enumerate(zip(whole, chunked)) if a != b), min(len(whole), len(chunked)))
        raise EdgespikeError(
            f"this tokenizer encodes text cut at line breaks differently from the whole text (first at token {at} "
            f"of {len(whole)}), so the training ids would not be what tokenizer.encode gives when the model is used; "
            "use a tokenizer whose pre-tokenizer splits at whitespace (--tokenizer bpe or char)"
        )
    return {"ids": "tokenizer.encode(text) of the whole text", "chunked_at": "a newline between two non-space characters",
            "checked_chars": len(text), "checked_pieces": len(chunk_boundaries(text, 1)) + 1}
