"""The profile as a PNG: per-layer spike rate, and per target the energy breakdown beside the
ANN and quantized-ANN equivalents (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path

from edgespike.errors import EdgespikeError

PARTS = ("compute", "memory", "spike_traffic", "static")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgespikeError("--plot needs matplotlib: pip install 'edgespike[plot]'") from None
    return plt


def plot_profile(report: dict, path: Path) -> None:
    plt = _pyplot()
    layers = [row for row in report["layers"] if row["spike_rate"] is not None]
    targets = {name: t for name, t in report["targets"].items() if t["energy_breakdown_j"] is not None}
    figure, (rates, energies) = plt.subplots(1, 2, figsize=(12, 4.5))
    rates.bar([row["name"] for row in layers], [row["spike_rate"] for row in layers], color="tab:orange")
    rates.set_ylabel("spike rate (spikes / neuron / timestep)")
    rates.set_title(f"{report['model']['family']}: measured spike rate per layer" if report["spikes"]["measured"]
                    else f"{report['model']['family']}: assumed firing rate")  # fmt: skip
    rates.tick_params(axis="x", rotation=45)
    names, bottom = list(targets), [0.0] * len(targets)
    for part in PARTS:
        values = [targets[name]["energy_breakdown_j"][part] * 1e6 for name in names]
        energies.bar(names, values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    for marker, key, label in (("D", "ann_energy_per_token_j", "ANN (fp32)"), ("s", "qann_energy_per_token_j", "quantized ANN")):
        points = [(i, targets[n][key]["with_memory"]) for i, n in enumerate(names) if targets[n][key]["with_memory"] is not None]
        if points:
            energies.scatter([p[0] for p in points], [p[1] * 1e6 for p in points], marker=marker, color="black", label=label, zorder=3)
    energies.set_yscale("log")
    energies.set_ylabel("energy per token (µJ, estimated)")
    energies.set_title("energy per token by target (estimated)")
    energies.tick_params(axis="x", rotation=45)
    energies.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_sweep(result: dict, path: Path) -> None:
    plt = _pyplot()
    key, rows = result["sweep"], result["rows"]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name in rows[0]["targets"]:
        points = [(row["targets"][name]["energy_per_token_j"], row) for row in rows if row["targets"][name]["energy_per_token_j"]]
        if points:
            axis.plot([p[0] * 1e6 for p in points], [p[1]["perplexity"] or 0 for p in points], marker="o", label=name)
            for energy, row in points:
                axis.annotate(f"{key}={row[key]}", (energy * 1e6, row["perplexity"] or 0), fontsize=7)
    axis.set_xscale("log")
    axis.set_xlabel("energy per token (µJ, estimated)")
    axis.set_ylabel("perplexity on the text")
    axis.set_title(f"{key} sweep: accuracy vs energy")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
