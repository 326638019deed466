import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
