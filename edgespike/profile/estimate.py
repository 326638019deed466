"""Energy and latency per token of counted work on a target, and the honest comparison.

Energy (J per token, estimated), for a target with ``spike_compute``:

    event   compute = acs * add_j + macs * mac_j + neuron_updates * neuron_update_j
    synop   compute = synops * add_j (the chip's synop energy) + neuron_updates * neuron_update_j
                      + the host's work: (acs - spiking_acs) adds and macs at the host rates
    dense   compute = dense_macs * mac_j (an NPU multiplies every input, spikes included)
    memory  = weight_bytes, state_bytes, activation_bytes, each at the tier holding its working set
              (synop: less the spiking linears' weights and the membranes, which the cores hold)
    spikes  = spikes * spike_j (moved over a fabric)      static = static_power_w * latency

Latency (s per token, estimated): a roofline, max(ops / peak_ops, bytes / bandwidth); the host
uses its cache bandwidth when the bytes per token fit its last-level cache. A synop target
spreads its cycles over all cores (a lower bound; the NeuronChip export gives the mapped figure) and
adds ``sync_per_timestep_s`` per timestep (SANA-FE's barrier sync with ``--chip-model sanafe``).

The comparison, for the same network on the same target: ``ann`` replaces every spiking layer
by dense fp32 activations and float weights (one pass, not T), ``qann`` by int8 activations
and the same 2-bit ternary weights. The break-even firing rate is where the spiking network's
energy, which grows linearly with the rate, equals ``qann``'s.
"""

from __future__ import annotations

from edgespike.profile.counting import FLOAT_BYTES, Counts
from edgespike.profile.targets import Target

HOST_ADD_J = 0.9e-12  # Horowitz, ISSCC 2014, 45 nm: fp32 add 0.9 pJ (host work of a synop target)
INT8_ADD_J = 0.03e-12  # Horowitz, ISSCC 2014, 45 nm: 8-bit add 0.03 pJ (a ternary x int8 product)
FP32_MAC_J = 4.6e-12  # Horowitz, ISSCC 2014, 45 nm: fp32 mult 3.7 pJ + fp32 add 0.9 pJ (the ANN's MAC)


def energy(counts: Counts, target: Target, latency_s: float | None, whole: Counts | None = None) -> dict[str, float] | None:
    """The breakdown, J per token; None for a target without an energy model (host). Memory tiers
    follow the working sets of ``whole`` (the model, when ``counts`` is one block of it)."""
    if not (target.mac_j or target.add_j):
        return None
    t = counts.total
    if target.spike_compute == "dense":
        compute = t("dense_macs") * target.mac_j
    elif target.spike_compute == "event":
        compute = t("acs") * target.add_j + t("macs") * target.mac_j + t("neuron_updates") * target.neuron_update_j
    else:  # synop: the chip's events, the host's adds and multiplies at 45 nm rates
        host_adds = t("acs") - t("spiking_acs")
        compute = (t("synops") * target.add_j + t("neuron_updates") * target.neuron_update_j
                   + host_adds * HOST_ADD_J + t("macs") * target.mac_j)  # fmt: skip
    breakdown = {"compute": compute, "memory": 0.0, "spike_traffic": t("spikes") * target.spike_j, "static": 0.0}
    if target.memory:
        sets = (whole or counts).total
        weights, state, on_chip = t("weight_bytes"), t("state_bytes"), 0.0
        if target.spike_compute == "synop":  # the cores hold the spiking linears and their membranes (in the synop energy)
            weights -= t("spike_weight_bytes")
            state = max(state - 2 * FLOAT_BYTES * t("neuron_updates") / counts.timesteps, 0.0)
            on_chip = sets("spike_weight_bytes")
        breakdown["memory"] = (
            weights * target.byte_j(sets("weight_bytes") - on_chip)
            + state * target.byte_j(sets("state_bytes") / 2)
            + t("activation_bytes") * target.byte_j(sets("activation_bytes"))
        )
    if target.static_power_w and latency_s:
        breakdown["static"] = target.static_power_w * latency_s
    return breakdown


def bytes_per_token(counts: Counts, passes: int = 1) -> float:
    """Weights (read ``passes`` times: T when each timestep re-reads them), state and activations."""
    return counts.total("weight_bytes") * passes + counts.total("state_bytes") + counts.total("activation_bytes")


def latency(counts: Counts, target: Target) -> dict | None:
    """Roofline latency per token (layer-major: weights read once), with what bounds it."""
    if target.spike_compute == "synop":
        cycles = counts.total("synops") * target.timestep_cycles_per_synop + counts.total("neuron_updates") * target.timestep_cycles_per_update
        sync_s = counts.timesteps * target.sync_per_timestep_s
        seconds = cycles / target.clock_hz / target.cores + sync_s
        return {"latency_s": seconds, "bound": "chip (lower bound)", "sync_s": sync_s,
                "note": f"chip cycles spread evenly over all {target.cores} cores, plus a barrier sync per timestep"}
    if not target.peak_ops_per_s:
        return None
    ops = 2 * (counts.total("dense_macs") if target.spike_compute == "dense" else counts.total("acs") + counts.total("macs"))
    moved = bytes_per_token(counts)
    in_cache = target.cache_bytes and counts.total("weight_bytes") + counts.total("state_bytes") <= target.cache_bytes
    bandwidth = target.cache_bandwidth_bytes_per_s if in_cache else target.bandwidth_bytes_per_s
    compute_s, memory_s = ops / target.peak_ops_per_s, moved / bandwidth
    return {
        "latency_s": max(compute_s, memory_s),
        "compute_s": compute_s,
        "memory_s": memory_s,
        "bound": ("memory" if memory_s >= compute_s else "compute") + (" (LLC)" if in_cache else ""),
        "bytes_per_token": moved,
        "roofline_tokens_per_s": 1 / max(compute_s, memory_s),
        "roofline_tokens_per_s_step_major": 1 / max(compute_s, bytes_per_token(counts, counts.timesteps) / bandwidth),
    }


def ann_equivalents(counts: Counts, target: Target) -> dict[str, float | None]:
    """Energy per token of the same network without spikes: fp32 dense (ann) and int8 x ternary (qann).

    The spiking linears see one dense input per token instead of T spike steps; LIF membranes
    are no longer carried (their state bytes go); everything else is as counted."""
    if target.spike_compute == "synop" or not (target.mac_j or target.add_j):
        return {"ann": None, "qann": None}  # a neuromorphic chip does not run an ANN; the host has no energy model
    t, T = counts.total, counts.timesteps
    spike_macs = t("spike_input_macs") / T
    other_macs = t("dense_macs") - t("spike_input_macs")
    inputs = t("spike_inputs") / T  # the dense values that replace the spike trains
    dense_activations = t("activation_bytes") - t("spike_inputs") / 8
    state = max(t("state_bytes") - 2 * FLOAT_BYTES * t("neuron_updates") / T, 0.0)
    if target.spike_compute == "dense":  # the NPU multiplies either way, at its own precision
        ann = qann = (spike_macs + other_macs) * target.mac_j
    else:
        ann = (spike_macs + other_macs) * FP32_MAC_J
        qann = spike_macs * INT8_ADD_J + other_macs * target.mac_j
    if target.memory:
        float_weights, ternary_weights = _float_weight_bytes(counts), t("weight_bytes")
        carried = state * target.byte_j(state / 2)
        ann += float_weights * target.byte_j(float_weights) + carried + (dense_activations + 4 * inputs) * target.byte_j(dense_activations)
        qann += ternary_weights * target.byte_j(ternary_weights) + carried + (dense_activations + inputs) * target.byte_j(dense_activations)
    return {"ann": ann, "qann": qann}


def _float_weight_bytes(counts: Counts) -> float:
    """The weights read per token if the linears' weights were fp32 (weight_bits -> 32 bits)."""
    return counts.total("weight_bytes") + counts.weights * (FLOAT_BYTES - counts.weight_bits / 8)


def break_even_rate(counts: Counts, target: Target, snn_j: float, qann_j: float | None) -> float | None:
    """The firing rate at which the spiking network costs what ``qann`` does (None: no crossing in [0, 1])."""
    rate = counts.spike_rate
    if qann_j is None or not rate or target.spike_compute == "dense":
        return None
    per_rate = _spiking_energy(counts, target) / rate  # J per token per unit firing rate
    fixed = snn_j - per_rate * rate
    if per_rate <= 0:
        return None
    crossing = (qann_j - fixed) / per_rate
    return crossing if 0 <= crossing <= 1 else None


def _spiking_energy(counts: Counts, target: Target) -> float:
    """The part of the energy that scales with the firing rate: spike-driven adds and spike traffic."""
    driven = counts.total("synops") if target.spike_compute == "synop" else counts.total("spiking_acs")
    return driven * target.add_j + counts.total("spikes") * target.spike_j
