"""Session fixtures: tiny CLIP checkpoints and small image datasets, built offline at test time."""

from __future__ import annotations

import os

# Hub clients read these at import: never touch the network from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests._fixtures_models", "tests._fixtures_hub", "tests._fixtures_suite"]
