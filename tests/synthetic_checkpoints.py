"""Seeded random checkpoints in SpikingBrain's published Hugging Face layout, written shard by
shard (one shard's tensors in memory at a time), for import tests and the 7B measurement:

    python tests/synthetic_checkpoints.py spikingbrain-7b OUT_DIR [--shard-gb 2] [--seed 0]

The tensor names and shapes are the published ones (the ``spikingbrain_hf`` family's, built on the
meta device); values are N(0, 0.02), norms 1, bf16 (base) or fp32 with per-group scales (W8ASpike)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from edgespike.models import preset_config
from edgespike.models.registry import build

HF_FIELDS = {  # SpikingBrainHFConfig field -> config.json (configuration_gla_swa.py) field
    "vocab_size": "vocab_size", "d_model": "hidden_size", "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads", "ffn_dim": "intermediate_size",
    "sliding_window": "sliding_window", "rope_theta": "rope_theta", "norm_eps": "norm_eps",
    "max_seq_len": "max_position_embeddings", "attn_layers": "attn_layers",
}


def write_sharded(preset: str, out: Path, shard_bytes: int, seed: int = 0) -> dict:
    """Write config.json, model-0000i-of-0000n.safetensors and the index; returns the index."""
    config = preset_config("spikingbrain_hf", preset)
    shapes = {name: tuple(t.shape) for name, t in build(config, "meta").state_dict().items()}
    dtype = torch.float32 if config.w8aspike else torch.bfloat16
    generator = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    shards, current, size = [], {}, 0

    def flush():
        nonlocal current, size
        if current:
            shards.append(list(current))  # the names; the tensors are released
            save_file(current, str(out / f"shard-{len(shards)}.tmp"), metadata={"format": "pt"})
            current, size = {}, 0

    for name, shape in shapes.items():
        if name.endswith("weight") and len(shape) == 1:
            tensor = torch.ones(shape, dtype=dtype)  # norms
        elif name.endswith("scales"):
            tensor = torch.full(shape, 0.02 / 64, dtype=dtype)
        else:
            tensor = (torch.randn(shape, generator=generator) * 0.02).to(dtype)
        if size and size + tensor.numel() * tensor.element_size() > shard_bytes:
            flush()
        current[name] = tensor
        size += tensor.numel() * tensor.element_size()
    flush()
    count, weight_map = len(shards), {}
    for i, names in enumerate(shards, 1):
        final = f"model-{i:05d}-of-{count:05d}.safetensors"
        (out / f"shard-{i}.tmp").rename(out / final)
        weight_map.update({name: final for name in names})
    index = {"metadata": {"total_size": sum(torch.Size(s).numel() * dtype.itemsize for s in shapes.values())},
             "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    hf = {HF_FIELDS[k]: getattr(config, k) for k in HF_FIELDS}
    hf.update({"model_type": "gla_swa", "architectures": ["GLAswaForCausalLM"], "torch_dtype": str(dtype).removeprefix("torch."),
               "eos_token_id": 151643, "bos_token_id": 151643, "tie_word_embeddings": False})
    (out / "config.json").write_text(json.dumps(hf, indent=2))
    return index


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("out", type=Path)
    parser.add_argument("--shard-gb", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    index = write_sharded(args.preset, args.out, int(args.shard_gb * 2**30), args.seed)
    print(f"{len(set(index['weight_map'].values()))} shards, {index['metadata']['total_size'] / 1e9:.2f} GB")
