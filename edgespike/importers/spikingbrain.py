"""SpikingBrain-7B checkpoints (BICLab/SpikingBrain-7B): a Hugging Face model dir.

    edgespike import spikingbrain HF_DIR --out MODEL_DIR [--force]

HF_DIR holds config.json (``model_type`` gla_swa, the published field names), the weights as one
``model.safetensors`` or as the shards ``model.safetensors.index.json`` names, and the Qwen2 tokenizer
(tokenizer.json, or vocab.json + merges.txt + tokenizer_config.json). Two weight layouts are read, told
apart by their tensor names: base / SFT (bf16, low-rank ``gk_proj.0`` / ``gk_proj.1``) and W8ASpike (fp32,
full-rank ``gk_proj``, ``weight_quantizer.scales`` on every QuantLinear; the group size follows from their
shape). The published names are the ``spikingbrain_hf`` family's names, so nothing is renamed.

Nothing in HF_DIR is executed: ``auto_map`` (the remote-code entry) and any .py files are ignored, with a
note. Architecture is read only from config.json's fields; ``--preset`` / ``--config`` are refused.

Streaming, peak memory. The shards are first checked from their headers alone (names, shapes, dtypes;
safetensors ``safe_open``, no tensor read). The output ``model.safetensors`` is then written directly:
its header is computed from those headers, and the tensors are copied one at a time (``get_tensor`` of
one tensor, checked finite, its bytes written, released). Peak memory is the largest single tensor
(the 7B's embedding or lm_head: 1.09 GB in bf16, 2.18 GB in fp32) plus page cache; never the model.
Dtypes are kept. Everything is written into a staging dir renamed into place, so a failure leaves
nothing behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from edgespike.config import SIZE_LIMITS, ConfigError
from edgespike.errors import EdgespikeError
from edgespike.importers import ImportOptions, read_json, register_importer
from edgespike.models.format import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, replace_dir, load_tokenizer
from edgespike.models.registry import build
from edgespike.models.spikingbrain_hf import EOS_TOKEN_ID, SpikingBrainHFConfig
from edgespike.staging import new_staging

MODEL_TYPE = "gla_swa"
INDEX_FILE, SINGLE_FILE = "model.safetensors.index.json", "model.safetensors"
SCALES = "weight_quantizer.scales"
# configuration_gla_swa.py (GLAswaConfig) defaults, for fields a config.json leaves out
DEFAULTS = {
    "vocab_size": 152064, "hidden_size": 3584, "num_hidden_layers": 28, "attn_mode": "chunk",
    "num_attention_heads": 28, "num_key_value_heads": 4, "use_short_conv": False, "conv_size": 4,
    "intermediate_size": 18944, "hidden_act": "swish", "max_position_embeddings": 4096 * 32,
    "sliding_window": 4096, "elementwise_affine": True, "norm_eps": 1e-6, "rope_theta": 1e6,
    "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": EOS_TOKEN_ID,
    "tie_word_embeddings": False, "quant_weight_group_size": None,
}
REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")
DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
# Qwen2's pre-tokenizer (transformers' Qwen2TokenizerFast / tokenization_qwen2.PRETOKENIZE_REGEX)
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


# --- config.json -----------------------------------------------------------------------------------

def read_hf_config(directory: Path, notes: list[str]) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise EdgespikeError(f"{directory} has no {CONFIG_FILE}; give the Hugging Face dir of a SpikingBrain-7B checkpoint")
    hf = read_json(path, "the model's config")
    if not isinstance(hf, dict):
        raise EdgespikeError(f"{path} must hold a JSON object")
    if hf.get("model_type") != MODEL_TYPE:
        raise EdgespikeError(
            f"{path}: unknown model_type {hf.get('model_type')!r}; the spikingbrain importer reads {MODEL_TYPE!r} "
            "(GLAswaForCausalLM) checkpoints"
        )
    for key in REMOTE_CODE_KEYS:
        if key in hf:
            notes.append(f"config.json's {key!r} (remote code) is ignored: nothing in {directory.name} is executed")
    scripts = sorted(p.name for p in directory.glob("*.py"))
    if scripts:
        notes.append(f"{len(scripts)} python file(s) in {directory.name} ({', '.join(scripts[:4])}) ignored, never run")
    return {**DEFAULTS, **hf}


def edgespike_config(hf: dict, path: Path, w8aspike: bool, group: int | None) -> SpikingBrainHFConfig:
    checks = {
        "use_short_conv": (False, "the published 7B has no short convolution"),
        "tie_word_embeddings": (False, "SpikingBrain-7B's lm_head is untied"),
        "elementwise_affine": (True, "its RMSNorms carry weights"),
    }
    for key, (value, why) in checks.items():
        if hf[key] != value:
            raise EdgespikeError(f"{path}: {key} is {hf[key]!r}; only {value!r} is supported ({why})")
    if hf["hidden_act"] not in ("swish", "silu"):
        raise EdgespikeError(f"{path}: hidden_act {hf['hidden_act']!r}; SpikingBrain's GLU is swish (silu)")
    if hf.get("attn_mode", "chunk") not in ("chunk", "fused_chunk", "fused_recurrent"):
        raise EdgespikeError(f"{path}: attn_mode {hf['attn_mode']!r} is not one of fla's GLA modes")
    layers = hf["num_hidden_layers"]
    if not isinstance(layers, int) or isinstance(layers, bool) or not 1 <= layers <= SIZE_LIMITS["n_layers"]:
        raise EdgespikeError(f"{path}: num_hidden_layers must be an integer in [1, {SIZE_LIMITS['n_layers']}], got {str(layers)[:40]}")
    attn_layers = hf.get("attn_layers", list(range(1, layers, 2)) if isinstance(layers, int) else None)
    try:
        return SpikingBrainHFConfig(
            vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=layers,
            n_heads=hf["num_attention_heads"], n_kv_heads=hf["num_key_value_heads"] or hf["num_attention_heads"],
            ffn_dim=hf["intermediate_size"], attn_layers=attn_layers, sliding_window=hf["sliding_window"],
            rope_theta=float(hf["rope_theta"]), norm_eps=float(hf["norm_eps"]),
            max_seq_len=hf["max_position_embeddings"], w8aspike=w8aspike, w_group_size=group or 128,
            eos_token_id=hf["eos_token_id"] if isinstance(hf["eos_token_id"], int) else EOS_TOKEN_ID,
        )
    except (ConfigError, TypeError, ValueError, ArithmeticError, AttributeError) as err:  # a wrong type or zero size
        raise EdgespikeError(f"{path}: {str(err).splitlines()[0][:200]}; check config.json's fields") from None


# --- the shards ------------------------------------------------------------------------------------

def shard_files(directory: Path) -> list[Path]:
    index_path, single = directory / INDEX_FILE, directory / SINGLE_FILE
    if index_path.is_file():
        index = read_json(index_path, "the shard index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise EdgespikeError(f"{index_path} has no weight_map of tensor name -> shard file; re-download it")
        names = list(dict.fromkeys(weight_map.values()))
        for name in names:
            if Path(name).name != name:
                raise EdgespikeError(f"{index_path} names shard {name!r} outside {directory}; a shard is a file beside the index")
            if not _is_file(directory / name):
                raise EdgespikeError(f"{index_path} names shard {name!r}, which is not in {directory}; download it")
        return [directory / name for name in names]
    if single.is_file():
        return [single]
    raise EdgespikeError(f"{directory} has neither {INDEX_FILE} nor {SINGLE_FILE}; give the dir holding the weights")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system, and the like
        return False


def scan_shards(shards: list[Path], index: dict | None) -> dict[str, tuple[Path, str, tuple[int, ...]]]:
    """name -> (shard, dtype, shape), from the headers only; duplicates and index disagreements named."""
    found: dict[str, tuple[Path, str, tuple[int, ...]]] = {}
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as f:
                for name in f.keys():
                    piece = f.get_slice(name)
                    if name in found:
                        raise EdgespikeError(
                            f"tensor {name!r} is in both {found[name][0].name} and {shard.name}; the shards must not overlap"
                        )
                    found[name] = (shard, piece.get_dtype(), tuple(piece.get_shape()))
        except (SafetensorError, OSError) as err:
            reason = " ".join(str(err).split())[:300]  # safetensors echoes the bad value, newlines included
            raise EdgespikeError(f"{shard} is not a readable safetensors file ({reason}); is it complete? re-download it") from None
    if index is not None:
        for name, (shard, _, _) in found.items():
            listed = index.get(name)
            if listed is None:
                raise EdgespikeError(f"{shard.name} holds tensor {name!r}, which {INDEX_FILE} does not list; the index is stale")
            if listed != shard.name:
                raise EdgespikeError(f"{INDEX_FILE} puts {name!r} in {listed}, but it is in {shard.name}; the index is stale")
        missing = [name for name in index if name not in found]
        if missing:
            raise EdgespikeError(f"{INDEX_FILE} lists {missing[0]!r} in {index[missing[0]]}, which lacks it; re-download that shard")
    return found


def check_layout(found: dict, config: SpikingBrainHFConfig, config_path: Path) -> None:
    try:  # on the meta device: nothing allocated, whatever the sizes
        expected = {name: tuple(t.shape) for name, t in build(config, "meta").state_dict().items()}
    except (RuntimeError, ValueError, TypeError, ArithmeticError) as err:
        raise EdgespikeError(f"{config_path} describes no buildable model: {str(err).splitlines()[0][:200]}") from None
    layout = "W8ASpike" if config.w8aspike else "base / SFT"
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    if missing:
        raise EdgespikeError(
            f"the checkpoint lacks {len(missing)} tensor(s) that {config_path} ({layout} layout) needs, the first {missing[0]!r}"
        )
    if unexpected:
        shard = found[unexpected[0]][0].name
        raise EdgespikeError(
            f"{shard} holds {len(unexpected)} tensor(s) that {config_path} ({layout} layout) does not have, "
            f"the first {unexpected[0]!r}"
        )
    for name, shape in expected.items():
        shard, dtype, got = found[name]
        if got != shape:
            raise EdgespikeError(f"{shard.name}: tensor {name!r} has shape {got}, but {config_path} needs {shape}")
        if dtype not in DTYPES:
            raise EdgespikeError(f"{shard.name}: tensor {name!r} is {dtype}; SpikingBrain checkpoints are {', '.join(DTYPES)}")


def detect_layout(found: dict) -> tuple[bool, int | None]:
    """(w8aspike, group size) from the tensor names and the first scales' shape."""
    scales = [(name, shape) for name, (_, _, shape) in found.items() if name.endswith(SCALES)]
    if not scales:
        return False, None
    name, shape = scales[0]
    weight = found.get(name[: -len(SCALES)] + "weight")
    if weight is None or len(shape) != 3 or not shape[1] or weight[2][1] % shape[1]:
        raise EdgespikeError(f"{found[name][0].name}: {name!r} has shape {shape}, not [out, in / group, 1] of its weight")
    return True, weight[2][1] // shape[1]


# --- the streamed writer ---------------------------------------------------------------------------

def write_weights(path: Path, found: dict, names: list[str], metadata: dict[str, str]) -> None:
    """A safetensors file of ``names`` copied tensor by tensor from the shards (one tensor in memory)."""
    itemsize = {name: DTYPES[found[name][1]].itemsize for name in names}
    # widest dtype first keeps every tensor aligned to its element size; shard by shard within a dtype
    order = sorted(names, key=lambda n: (-itemsize[n], str(found[n][0]), names.index(n)))
    header, offset = {"__metadata__": metadata}, 0
    for name in order:
        _, dtype, shape = found[name]
        size = itemsize[name] * int(torch.Size(shape).numel())
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as out:
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        position = 0
        while position < len(order):
            shard = found[order[position]][0]
            with safe_open(str(shard), framework="pt") as f:
                while position < len(order) and found[order[position]][0] == shard:
                    name = order[position]
                    tensor = f.get_tensor(name)
                    if not torch.isfinite(tensor).all():
                        raise EdgespikeError(f"{shard.name}: tensor {name!r} holds NaN or infinite values; re-download it")
                    data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
                    if data.nbytes != header[name]["data_offsets"][1] - header[name]["data_offsets"][0]:
                        raise EdgespikeError(f"{shard.name}: tensor {name!r} does not match its header; re-download it")
                    out.write(memoryview(data))
                    del tensor, data
                    position += 1


# --- the tokenizer ---------------------------------------------------------------------------------

def qwen2_tokenizer(directory: Path, vocab_size: int, eos: int, notes: list[str]):
    """tokenizer.json as is, or the Qwen2 byte-level BPE built from vocab.json + merges.txt with the
    added / special tokens of tokenizer_config.json (or added_tokens.json); None if HF_DIR has none."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if (directory / TOKENIZER_FILE).is_file():
        tokenizer = load_tokenizer(directory / TOKENIZER_FILE, vocab_size)
    elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        vocab = read_json(directory / "vocab.json", "the BPE vocabulary")
        lines = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
        if not isinstance(vocab, dict) or any(len(m) != 2 for m in merges):
            raise EdgespikeError(f"{directory}: vocab.json must map tokens to ids and merges.txt hold 'a b' pairs")
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                                         continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                                         byte_fallback=False))
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        added = added_tokens(directory)
        for token_id in sorted(added):
            content, special = added[token_id]
            tokenizer.add_tokens([AddedToken(content, special=special, normalized=False, lstrip=False, rstrip=False,
                                             single_word=False)])
            if tokenizer.token_to_id(content) != token_id:
                raise EdgespikeError(
                    f"{directory}: added token {content!r} should be id {token_id} but lands at "
                    f"{tokenizer.token_to_id(content)}; its ids must follow vocab.json's without gaps"
                )
        if tokenizer.get_vocab_size() > vocab_size:
            raise EdgespikeError(f"{directory}: the tokenizer has {tokenizer.get_vocab_size()} tokens, the model {vocab_size}")
        notes.append(f"tokenizer.json built from vocab.json + merges.txt (Qwen2 byte-level BPE, {len(added)} added tokens)")
    else:
        notes.append(f"{directory.name} has no tokenizer (tokenizer.json or vocab.json + merges.txt); the model dir has none")
        return None
    eos_token = tokenizer.id_to_token(eos)
    if eos_token is None:
        raise EdgespikeError(f"{directory}: eos_token_id {eos} is not a token of the tokenizer; check config.json")
    notes.append(f"EOS is {eos} ({eos_token})")
    return tokenizer


def added_tokens(directory: Path) -> dict[int, tuple[str, bool]]:
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        decoder = read_json(config_path, "the tokenizer config").get("added_tokens_decoder", {})
        try:
            return {int(i): (t["content"], bool(t.get("special", False))) for i, t in decoder.items()}
        except (TypeError, KeyError, ValueError):
            raise EdgespikeError(f"{config_path}: added_tokens_decoder must map ids to {{content, special}}") from None
    if (directory / "added_tokens.json").is_file():
        table = read_json(directory / "added_tokens.json", "the added tokens")
        return {int(i): (content, True) for content, i in table.items()}
    return {}


# --- the importer ----------------------------------------------------------------------------------

def inspect_checkpoint(path: Path, notes: list[str]) -> tuple[SpikingBrainHFConfig, dict, list[Path], int | None]:
    """HF_DIR's config, shards, index and headers, all checked; no tensor read."""
    if not path.is_dir():
        raise EdgespikeError(f"{path} is not a directory; give the Hugging Face dir (config.json + safetensors shards)")
    hf = read_hf_config(path, notes)
    shards = shard_files(path)
    index = read_json(path / INDEX_FILE, "the shard index")["weight_map"] if (path / INDEX_FILE).is_file() else None
    found = scan_shards(shards, index)
    w8aspike, group = detect_layout(found)
    config = edgespike_config(hf, path / CONFIG_FILE, w8aspike, group)
    check_layout(found, config, path / CONFIG_FILE)
    return config, found, shards, group


def import_spikingbrain(path: Path, options: ImportOptions) -> Path:
    if options.preset is not None or options.config is not None:
        raise EdgespikeError(
            "spikingbrain takes no --preset / --config: the architecture is HF_DIR/config.json; drop the option"
        )
    config, found, shards, group = inspect_checkpoint(path, options.notes)
    w8aspike = config.w8aspike
    dtypes = sorted({found[name][1] for name in found})
    options.notes.append(
        f"{'W8ASpike' if w8aspike else 'base / SFT'} layout, {len(found)} tensors in {len(shards)} shard(s), "
        f"dtype(s) {', '.join(dtypes)} kept" + (f", weight groups of {group}" if w8aspike else "")
    )
    tokenizer = None
    if options.tokenizer is not None:
        tokenizer = load_tokenizer(options.tokenizer, config.vocab_size)
    else:
        tokenizer = qwen2_tokenizer(path, config.vocab_size, config.eos_token_id, options.notes)

    out = options.out
    staging = new_staging(out)
    try:
        (staging / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        names = list(build(config, "meta").state_dict())
        write_weights(staging / WEIGHTS_FILE, found, names, {"format": "pt", "family": config.family})
        if tokenizer is not None:
            tokenizer.save(str(staging / TOKENIZER_FILE))
            sidecar = path / "tokenizer_config.json"  # carries the chat template and the special tokens' names
            if sidecar.is_file():
                shutil.copyfile(sidecar, staging / sidecar.name)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


register_importer("spikingbrain", import_spikingbrain)
