"""The agreement table of the NeuronChip runtime on SANA-FE against edgespike's simulator and eager PyTorch:
``python tests/sanafe_agreement.py [TOKENS]`` exports the demo and every family's tiny preset for Loihi and
prints, per model, mean per token: spike agreement of every LIF call (free-running sessions, SANA-FE vs
edgespike's simulator vs eager; and SANA-FE vs edgespike's simulator on the same input spikes), on-chip
energy and chip latency from both cost models and their ratio, and wall time per token of each simulator;
"—" where a model has no chip LIF spikes to compare."""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgespike import models
from edgespike.data import encode, read_corpus, split_corpus
from edgespike.exporters import export
from edgespike.nn import LIF
from edgespike.runtimes import load
from edgespike.runtimes.eager import EagerSession

FAMILIES = ("pulse", "spikingbrain", "evospikenet", "neurogen", "ultimate")
ON_CHIP = ("synops", "neuron_updates", "spikes_routed")


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[int, int]:
    return sum(int((x == y).sum()) for x, y in zip(a, b)), sum(x.size for x in a)


def row(name: str, model, directory: Path, tokens: list[int]) -> dict:
    bundle = export(model, "neuronchip", directory).path
    start = time.perf_counter()
    sanafe = load(bundle, runtime="sanafe")
    open_s = time.perf_counter() - start
    ours, eager = load(bundle), EagerSession(model)
    recorded: list[np.ndarray] = []
    for module in eager.step_module.model.modules():
        if isinstance(module, LIF):
            module.register_forward_hook(lambda _m, _i, out: recorded.append(out[0].numpy().copy()))
    counts = {key: [0, 0] for key in ("sf_ours", "sf_eager", "ours_eager")}  # [agreeing, compared]
    sums = dict.fromkeys(("sf_e", "ours_e", "sf_t", "ours_t", "sf_wall", "ours_wall", "same_input", "sf_total", "ours_total"), 0.0)
    for token in tokens:
        recorded.clear()
        sanafe.step(token), ours.step(token), eager.step(token)
        for key, (a, b) in {"sf_ours": (sanafe.last_spikes, ours.last_spikes), "sf_eager": (sanafe.last_spikes, recorded),
                            "ours_eager": (ours.last_spikes, recorded)}.items():  # fmt: skip
            agree, total = agreement(a, b)
            counts[key][0] += agree
            counts[key][1] += total
        s, o = sanafe.stats, ours.stats
        sums["sf_e"] += s["sanafe_chip_energy_j"]
        sums["ours_e"] += sum(o["energy_breakdown_j"][k] for k in ON_CHIP)
        sums["sf_t"] += s["sanafe_chip_s"]
        sums["ours_t"] += o["latency_s"] - o["host_link_s"]
        sums["sf_total"] += s["energy_j"]
        sums["ours_total"] += o["energy_j"]
        sums["sf_wall"] += s["sanafe_s"]
        sums["ours_wall"] += o["simulator_s"]
        sums["same_input"] += s["spike_agreement"]
    n = len(tokens)
    mean = {k: v / n for k, v in sums.items()}
    lif = any(layer.lif is not None for layer in sanafe.layers)  # chip LIF layers (none: spikingbrain's coded ones, neurogen:tiny)
    return {"model": name, "layers": len(sanafe.layers), "open_s": open_s,
            **{k: agree / total if total else None for k, (agree, total) in counts.items()},
            **mean, "same_input": mean["same_input"] if lif else None}  # fmt: skip


def main(count: int = 16) -> None:
    demo = models.load("demo")
    text = encode(demo.tokenizer, split_corpus(read_corpus())[1][:4000])[:count].tolist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(row("demo", demo, Path(tmp) / "demo", text))
        for family in FAMILIES:
            model = models.create(family, "tiny")
            tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, count).tolist()
            rows.append(row(f"{family}:tiny", model, Path(tmp) / family, tokens))
    print("| model | chip layers | spikes SF=ours | SF=ours same input | SF=eager | ours=eager | on-chip µJ SF / ours (ratio) "
          "| chip µs SF / ours (ratio) | total µJ SF / ours | wall ms SF / ours | SF open s |")
    print("|---" * 11 + "|")
    ratio = lambda a, b: f"{a / b:.2f}" if b else "—"  # noqa: E731
    share = lambda x: "—" if x is None else f"{x:.4f}"  # noqa: E731  (— : no chip LIF spikes to compare)
    for r in rows:
        print(f"| {r['model']} | {r['layers']} | {share(r['sf_ours'])} | {share(r['same_input'])} | {share(r['sf_eager'])} | "
              f"{share(r['ours_eager'])} | {r['sf_e'] * 1e6:.3f} / {r['ours_e'] * 1e6:.3f} ({ratio(r['sf_e'], r['ours_e'])}) | "
              f"{r['sf_t'] * 1e6:.1f} / {r['ours_t'] * 1e6:.1f} ({ratio(r['sf_t'], r['ours_t'])}) | "
              f"{r['sf_total'] * 1e6:.2f} / {r['ours_total'] * 1e6:.2f} | {r['sf_wall'] * 1e3:.1f} / {r['ours_wall'] * 1e3:.1f} | "
              f"{r['open_s']:.1f} |")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
