"""Session fixtures: tiny CLIP checkpoints and small image datasets, built offline at test time."""

from __future__ import annotations

import os

import pytest

# Hub clients read these at import: never touch the network from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models: thread start-up and contention cost more than they give (measured: a 32-wide ViT forward took
# 0.5 s with 2 threads on a busy 2-core machine, 3 ms with 1). Set before torch is imported; subprocesses
# (accelerate launch, torchrun) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

pytest_plugins = ["tests._fixtures_models", "tests._fixtures_hub", "tests._fixtures_suite"]


@pytest.hookimpl(trylast=True)  # after pytest's own tmp_path set-up
def pytest_configure(config):
    """Every cache a test run writes (hfdistac's heads and evaluations, datasets' Arrow files, the Hub cache) lives
    in this run's own temporary folder: nothing under ``~/.cache`` is read or written, so no earlier run (or an
    older build's cached numbers) can change a result. Set before any test module imports huggingface_hub or
    datasets, which copy these variables at import; subprocesses inherit them. Hub tests get a fresh ``HF_HOME``
    of their own (``hub_env``)."""
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller's folder is inherited
        return
    home = config._tmp_path_factory.getbasetemp() / "hf_home"
    home.mkdir(parents=True, exist_ok=True)
    for var in ("HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        os.environ.pop(var, None)
    os.environ["HF_HOME"] = str(home)
    os.environ["XDG_CACHE_HOME"] = str(home.parent / "xdg_cache")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts at one intra-op thread. The CLI sets torch's thread count for the process it runs in
    (``--threads``, default: the free cores), and tests call it in-process; without this a later test would
    run at another thread count than its subprocesses (1, from OMP_NUM_THREADS), and bit-for-bit comparisons
    between the two (resume after SIGKILL) would differ by float rounding."""
    import torch

    torch.set_num_threads(1)
    yield
