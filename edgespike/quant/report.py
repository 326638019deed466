"""``edgespike quantize-report``: what each weight format costs a model, measured.

Every format of ``edgespike.quant.weights`` runs the same held-out tokens (one teacher-forced
pass over the whole sequence, the state carried within it) beside the model as it computes
(fp32; a ternary-trained model through its ternary forward, the formats from its latent weights):
held-out perplexity, top-1 agreement and max |logit difference| with it, and the bytes of the
linears' weights as each format stores them (codes + per-channel scales, or floats).
"""

from __future__ import annotations

import copy
import math

import torch

from edgespike.models.base import SpikingLM
from edgespike.nn import TernaryLinear
from edgespike.quant.weights import WEIGHT_BITS, WEIGHT_FORMATS, quantize_weights


def linear_weight_bytes(model: SpikingLM, weights: str) -> int:
    """Bytes of every linear's weight as ``weights`` stores it; integer formats add an fp32 scale
    per output channel (one for ternary)."""
    total = 0
    for module in model.modules():
        if isinstance(module, TernaryLinear):
            total += module.in_features * module.out_features * WEIGHT_BITS[weights] // 8
            if weights in ("int8", "int4"):
                total += 4 * module.out_features
            elif weights == "ternary":
                total += 4
    return total


@torch.no_grad()
def quantize_report(model: SpikingLM, tokens: list[int], formats: tuple[str, ...] = WEIGHT_FORMATS) -> dict:
    """Per format: perplexity of ``tokens``, agreement with the unquantized model, weight bytes."""
    ids = torch.tensor([tokens], dtype=torch.long)
    reference = copy.deepcopy(model).float().eval()
    expected = reference(ids[:, :-1])[0][0]
    rows = []
    for weights in formats:
        quantized = quantize_weights(copy.deepcopy(reference), weights)
        logits = quantized(ids[:, :-1])[0][0]
        loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()
        rows.append({
            "weights": weights,
            "perplexity": math.exp(loss),
            "top1_agreement": (logits.argmax(-1) == expected.argmax(-1)).float().mean().item(),
            "max_abs_logit_diff": (logits - expected).abs().max().item(),
            "linear_weight_bytes": linear_weight_bytes(reference, weights),
        })
    return {
        "family": model.config.family,
        "trained_weights": model.config.weights,
        "tokens": len(tokens),
        "text": "held-out text" if model.tokenizer is not None else "random token ids (no tokenizer): perplexity is not meaningful",
        "reference": f"the model as it computes ({model.config.weights} weights, fp32)",
        "reference_perplexity": math.exp(torch.nn.functional.cross_entropy(expected, ids[0, 1:]).item()),
        "formats": rows,
    }
