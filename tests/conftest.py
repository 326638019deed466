import os

# the suite runs 2 workers on 2 cores (addopts): one torch thread each, in their subprocesses too.
# Oversubscribed, torch's threads spin: on 2 shared cores eager's step took 34 ms with 2 threads, 3.3 ms with 1
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _no_prefill_entry_unless_asked():
    """Exports in this process get no prefill entry unless a test asks (``ExportOptions.prefill_tokens``,
    tests/test_prefill.py): each entry is a second graph to lower (the demo's Core ML export takes 4x as long)."""
    from edgespike.exporters import EXPORTERS

    defaults = {name: exporter.prefill_tokens for name, exporter in EXPORTERS.items()}
    for exporter in EXPORTERS.values():
        exporter.prefill_tokens = 0
    yield
    for name, tokens in defaults.items():
        EXPORTERS[name].prefill_tokens = tokens


FUZZ_EXAMPLES, QUICK_EXAMPLES = 10_000, 100  # per loader: `pytest -m fuzz --fuzz`, and every normal run


def pytest_addoption(parser):
    parser.addoption("--fuzz", action="store_true", help=f"fuzz every loader with {FUZZ_EXAMPLES:,} inputs (tests/test_fuzz_loaders.py)")


def pytest_configure(config):
    from hypothesis import HealthCheck, settings

    full = config.getoption("--fuzz")
    settings.register_profile(
        "edgespike-fuzz", max_examples=FUZZ_EXAMPLES if full else QUICK_EXAMPLES, derandomize=not full, deadline=None,
        database=None, suppress_health_check=list(HealthCheck),
    )
