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


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts at one intra-op thread. The CLI sets torch's thread count for the process it runs in
    (``--threads``, default: the free cores), and tests call it in-process; without this a later test would
    run at another thread count than its subprocesses (1, from OMP_NUM_THREADS), and bit-for-bit comparisons
    between the two (resume after SIGKILL) would differ by float rounding."""
    import torch

    torch.set_num_threads(1)
    yield
