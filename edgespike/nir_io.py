"""NIR <-> edgespike: the continuous NIR nodes and the discrete laws edgespike runs (one place
for the exporter, the importer and the NIR runtime).

NIR nodes are continuous-time; edgespike, like snntorch, steps them forward-Euler at ``dt``:

    LIF      tau dv/dt = (v_leak - v) + r I          v[t] = beta v[t-1] + g I[t]
                                                     beta = 1 - dt/tau,  g = r dt/tau
    CubaLIF  tau_syn dI/dt = -I + w_in S             I[t] = alpha I[t-1] + g_syn S[t]
             tau_mem dv/dt = (v_leak - v) + r I      v[t] = beta v[t-1] + g_mem I[t]   (I[t] the updated
                                                     current, as snntorch's Synaptic; alpha = 1 - dt/tau_syn,
                                                     g_syn = w_in dt/tau_syn, beta = 1 - dt/tau_mem, g_mem = r dt/tau_mem)
    Affine   y = W x + b;   Linear  y = W x

Writing, edgespike makes snntorch's ``export_to_nir`` choices: tau = dt/(1-beta), r = tau/dt (g = 1),
w_in = tau_syn/dt, v_leak = 0, v_reset = 0, dt = 1e-4 s unless the model says otherwise; the graph's
metadata holds ``dt`` and ``timesteps`` (per token). Reading, v_leak must be 0; a gain g != 1 is folded
into the preceding Affine / Linear (exact: the law is linear in I), and |g - 1| <= GAIN_ROUNDING
(float32 rounding of snntorch's r = tau/dt) is taken as 1.

Reset laws. NIR's text resets v to v_reset when v > v_threshold, at once. snntorch's Leaky and Synaptic
(whose graphs export_to_nir writes without saying so) reset by subtraction one step late (reset_delay=True):
    v[t] = beta v[t-1] + I[t] - H(v[t-1] - thr) thr,   s[t] = H(v[t] - thr),   H(x) = 1 if x > 0
Every neuron node edgespike writes states its law in its metadata (``reset`` subtract|zero|none,
``delayed_reset``, ``strict``: ``edgespike.ops.lif``); a node without it gets the importer's law,
``LAWS["snntorch"]`` (the above, the default) or ``LAWS["nir"]`` (reset to v_reset = 0 at once).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np

from edgespike.errors import EdgespikeError

DT = 1e-4  # seconds per timestep: snntorch's export_to_nir / import_from_nir constant
GAIN_ROUNDING = 1e-6
SUPPORTED = ("Input", "Output", "Affine", "Linear", "LIF", "CubaLIF")
LAW_KEYS = ("reset", "delayed_reset", "strict")
LAWS = {
    "snntorch": {"reset": "subtract", "delayed_reset": True, "strict": True},
    "nir": {"reset": "zero", "delayed_reset": False, "strict": True},
}


def law_equation(law: dict) -> str:
    """The discrete law of a neuron node, in words, for manifests."""
    fire = "H(x) = x > 0" if law["strict"] else "H(x) = x >= 0"
    if law["reset"] == "none":
        return f"v[t] = beta v[t-1] + I[t]; s[t] = H(v[t] - thr), no reset; {fire}"
    when = "one step late, from H(v[t-1] - thr) (snntorch reset_delay)" if law["delayed_reset"] else "in the step it fires"
    how = "subtract thr" if law["reset"] == "subtract" else "set v to 0"
    return f"v[t] = beta v[t-1] + I[t]; s[t] = H(v[t] - thr); reset: {how}, {when}; {fire}"


def _nir():
    try:
        import nir
    except ImportError as err:
        raise ImportError("NIR needs the nir package: pip install nir==1.0.8 (or 'edgespike[export]')") from err
    return nir


def neuron_node(kind: str, beta, threshold, law: dict, dt: float, alpha=None):
    """A nir.LIF ("lif") or nir.CubaLIF ("cuba_lif") of per-neuron float64 parameters, its law in its metadata."""
    nir = _nir()
    beta, threshold = np.asarray(beta, np.float64), np.asarray(threshold, np.float64)
    if np.any(beta >= 1) or np.any(beta < 0):
        raise ValueError(f"NIR's LIF needs 0 <= beta < 1 (tau = dt / (1 - beta) finite), got beta in [{beta.min()}, {beta.max()}]")
    tau = dt / (1.0 - beta)
    zeros, metadata = np.zeros_like(beta), {key: law[key] for key in LAW_KEYS}
    if kind == "lif":
        return nir.LIF(tau=tau, r=tau / dt, v_leak=zeros, v_threshold=threshold, v_reset=zeros, metadata=metadata)
    alpha = np.asarray(alpha, np.float64)
    if np.any(alpha >= 1) or np.any(alpha < 0):
        raise ValueError(f"NIR's CubaLIF needs 0 <= alpha < 1, got alpha in [{alpha.min()}, {alpha.max()}]")
    tau_syn = dt / (1.0 - alpha)
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=tau / dt, v_leak=zeros, v_threshold=threshold,
                       v_reset=zeros, w_in=tau_syn / dt, metadata=metadata)


def linear_node(weight, bias=None):
    """nir.Affine (with a bias) or nir.Linear, float32 weights [out, in]."""
    nir = _nir()
    weight = np.asarray(weight, np.float32)
    return nir.Linear(weight=weight) if bias is None else nir.Affine(weight=weight, bias=np.asarray(bias, np.float32))


def _decay(tau, dt: float) -> np.ndarray:
    """1 - dt/tau in float32, via the leak dt/tau (exact for snntorch's float32 tau = dt / (1 - beta))."""
    leak = (dt / np.asarray(tau, np.float64)).astype(np.float32)
    return (np.float32(1.0) - leak).astype(np.float32)


def _gain(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value, np.float64)
    return np.where(np.abs(value - 1.0) <= GAIN_ROUNDING, 1.0, value)


def discrete(name: str, node, dt: float) -> dict:
    """The discrete parameters of a LIF / CubaLIF node: beta, (alpha,) threshold and the input gain g
    (per neuron, float32 / float64), or a one-line error naming what cannot be expressed."""
    fields = ("tau", "r", "v_leak", "v_threshold") if type(node).__name__ == "LIF" else (
        "tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "w_in")
    values = {}
    for key in fields:
        value = getattr(node, key, None)
        if value is None:
            raise EdgespikeError(f"NIR node {name!r} ({type(node).__name__}) has no {key}; the node is incomplete")
        values[key] = np.asarray(value, np.float64)
        if not np.all(np.isfinite(values[key])):
            raise EdgespikeError(f"NIR node {name!r}: {key} holds NaN or infinite values")
    if np.any(values["v_leak"] != 0):
        raise EdgespikeError(f"NIR node {name!r}: v_leak != 0 is not supported (edgespike's neurons leak towards 0)")
    tau = values["tau"] if "tau" in values else values["tau_mem"]
    if np.any(tau <= 0):
        raise EdgespikeError(f"NIR node {name!r}: time constants must be > 0")
    out = {"beta": _decay(tau, dt), "threshold": values["v_threshold"].astype(np.float32), "gain": _gain(values["r"] * dt / tau)}
    if "tau_syn" in values:
        if np.any(values["tau_syn"] <= 0):
            raise EdgespikeError(f"NIR node {name!r}: tau_syn must be > 0")
        out["alpha"] = _decay(values["tau_syn"], dt)
        out["gain"] = _gain(out["gain"] * _gain(values["w_in"] * dt / values["tau_syn"]))
    v_reset = getattr(node, "v_reset", None)
    if v_reset is not None and np.any(np.asarray(v_reset) != 0):
        raise EdgespikeError(f"NIR node {name!r}: v_reset != 0 is not supported (edgespike resets to 0 or by subtraction)")
    return out


def node_law(name: str, node, default: dict) -> dict:
    """The reset law a neuron node states in its metadata, else ``default``."""
    metadata = getattr(node, "metadata", None) or {}
    law = dict(default)
    for key in LAW_KEYS:
        if key in metadata:
            value = metadata[key]
            law[key] = value.decode() if isinstance(value, bytes) else (bool(value) if key != "reset" else str(value))
    if law["reset"] not in ("subtract", "zero", "none"):
        raise EdgespikeError(f"NIR node {name!r}: metadata reset {law['reset']!r} is not one of subtract, zero, none")
    return law


def _types(group, where: str = "") -> list[tuple[str, str]]:
    """(node path, type) of every node in an HDF5 NIR group, nested graphs included."""
    found = []
    for name, node in group["nodes"].items():
        kind = node["type"][()] if "type" in node else b"?"
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        found.append((where + name, kind))
        if kind == "NIRGraph" and "nodes" in node:
            found.extend(_types(node, f"{where}{name}/"))
    return found


def _shallow_dict(node) -> dict:
    """``node.to_dict()`` with its arrays shared: to_dict's ``dataclasses.asdict`` deep-copies every value."""
    arrays = {f.name: getattr(node, f.name) for f in dataclasses.fields(node) if isinstance(getattr(node, f.name), np.ndarray)}
    graph = type(node).__name__ == "NIRGraph"  # its to_dict deep-copies every child: done here, shallow
    light = copy.copy(node)
    for name in arrays:
        object.__setattr__(light, name, None)
    if graph:
        object.__setattr__(light, "nodes", {})
    found = {**light.to_dict(), **arrays}
    if graph:
        found["nodes"] = {name: _shallow_dict(child) for name, child in node.nodes.items()}
    return found


def write_graph(path: Path, graph, compression: str = "gzip") -> None:
    """The file ``nir.write(path, graph)`` writes, without its copy of every weight (``to_dict``'s deep
    copy doubled a large graph's memory while it was written)."""
    import h5py

    nir = _nir()

    def write(group, values: dict) -> None:  # nir.write's layout, dataset by dataset
        for key, value in values.items():
            if key == "metadata":
                if value != {}:
                    write(group.create_group(key), value)
            elif isinstance(value, str):
                group.create_dataset(key, data=value, dtype=h5py.string_dtype())
            elif isinstance(value, np.ndarray):
                group.create_dataset(key, data=value, dtype=value.dtype, compression=compression)
            elif isinstance(value, dict):
                write(group.create_group(str(key)), value)
            else:
                group.create_dataset(key, data=value)

    with h5py.File(path, "w") as f:
        f.create_dataset("version", data=nir.version, dtype=h5py.string_dtype())
        write(f.create_group("node"), _shallow_dict(graph))


def read_graph(path: Path):
    """A NIR graph read with ``nir.read`` (HDF5 data, nothing executed), its node types checked first:
    one-line errors for a file that is not NIR, unknown or unsupported node types, broken nodes."""
    import h5py

    nir = _nir()
    try:
        with h5py.File(path, "r") as f:
            if "node" not in f or "nodes" not in f["node"]:
                raise EdgespikeError(f"{path} is an HDF5 file but not a NIR graph (no node/nodes group); write it with nir.write")
            types = _types(f["node"])
    except OSError as err:
        raise EdgespikeError(f"{path} is not a NIR file (HDF5, written by nir.write): {err}") from None
    for name, kind in types:
        if kind == "NIRGraph":
            raise EdgespikeError(
                f"NIR node {name!r} is a nested NIRGraph (a recurrent RLeaky / RSynaptic loop); edgespike imports a "
                f"flat chain of {', '.join(SUPPORTED)}"
            )
        if kind not in SUPPORTED:
            raise EdgespikeError(f"NIR node {name!r} has type {kind!r}, which edgespike does not import; supported: {', '.join(SUPPORTED)}")
    try:
        return nir.read(path, type_check=False)
    except (AssertionError, KeyError, ValueError, TypeError) as err:
        raise EdgespikeError(f"{path}: nir.read failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
