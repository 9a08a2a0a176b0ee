"""Fixtures for Hub tests over real HTTP against the loopback server in ``tests/hub_server.py``.

``hub_server`` (session) starts one server; ``hub_env`` (per test) points huggingface_hub, transformers and
datasets at it with a dummy token, Xet disabled, online mode and a fresh ``HF_HOME``.

Setting environment variables is not enough once the libraries are imported: ``huggingface_hub.constants``,
``datasets.config`` and the module-level ``HfApi`` instance copy them at import. ``hub_env`` patches those copies
(see ``_patch_constants``); ``monkeypatch`` undoes everything after the test, so the session-wide
``HF_HUB_OFFLINE=1`` set by ``conftest.py`` is back for the next test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hub_server import HubServer

DUMMY_TOKEN = "hf_dummyTOKENabc123"


@pytest.fixture(scope="session")
def hub_server():
    """One loopback Hub for the whole session (repos persist: use unique repo names per test)."""
    server = HubServer(token=DUMMY_TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class HubEnv:
    """What a test needs to talk to the loopback Hub.

    Attributes: ``server``, ``endpoint`` (its URL), ``token`` (the dummy token the server accepts), ``home``
    (this test's ``HF_HOME``), ``cache`` (``HF_HOME/hub``).
    """

    server: HubServer
    endpoint: str
    token: str
    home: Path
    cache: Path
    _monkeypatch: pytest.MonkeyPatch

    def set_offline(self, offline: bool = True) -> None:
        """Switch ``HF_HUB_OFFLINE`` (env and the imported copies) for the rest of the test."""
        _set_offline(self._monkeypatch, offline)


def _set_offline(mp: pytest.MonkeyPatch, offline: bool) -> None:
    import datasets.config
    from huggingface_hub import constants

    mp.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    mp.setattr(constants, "HF_HUB_OFFLINE", offline)  # read by is_offline_mode() at every request
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", offline)
    mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", offline)


def _patch_constants(mp: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    """Patch the values the HF libraries copied from the environment at import time.

    huggingface_hub.constants: ``ENDPOINT`` (HfApi, snapshot_download), ``HUGGINGFACE_CO_URL_TEMPLATE``
    (``hf_hub_url``, i.e. every file download; built from ENDPOINT at import), ``HF_URL_HOSTS`` (hosts that
    keep the auth header across redirects), ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET`` (else uploads go through
    Xet, which the server lacks), and the paths under ``HF_HOME`` (hub cache, assets, xet cache, token files:
    a stray real token file must not be used). ``huggingface_hub.hf_api.api`` is the ``HfApi`` behind the
    module-level functions (``huggingface_hub.model_info``...), created at import with the old endpoint.
    datasets.config: ``HF_ENDPOINT``/``HUB_DATASETS_URL`` (datasets passes them to HfApi/HfFileSystem), its own
    offline flags, and its cache paths. transformers reads ``huggingface_hub.constants`` at call time.
    """
    import datasets.config
    from huggingface_hub import HfFileSystem, constants, hf_api
    from huggingface_hub.utils import _cache_manager

    hub_cache = str(home / "hub")
    mp.setattr(constants, "ENDPOINT", endpoint)
    mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    mp.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
    mp.setattr(constants, "HF_HUB_DISABLE_XET", True)
    mp.setattr(constants, "HF_HOME", str(home))
    mp.setattr(constants, "HF_HUB_CACHE", hub_cache)
    mp.setattr(constants, "HUGGINGFACE_HUB_CACHE", hub_cache)
    mp.setattr(constants, "HF_ASSETS_CACHE", str(home / "assets"))
    mp.setattr(constants, "HF_XET_CACHE", str(home / "xet"))
    mp.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    mp.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    mp.setattr(_cache_manager, "HF_HUB_CACHE", hub_cache)
    mp.setattr(hf_api.api, "endpoint", endpoint)

    mp.setattr(datasets.config, "HF_ENDPOINT", endpoint)
    mp.setattr(datasets.config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
    mp.setattr(datasets.config, "HF_CACHE_HOME", str(home))
    mp.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    mp.setattr(datasets.config, "HF_MODULES_CACHE", home / "modules")
    mp.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", home / "datasets" / "downloads")
    mp.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", home / "datasets" / "downloads" / "extracted")
    mp.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    # fsspec caches HfFileSystem instances (with their directory listings) across tests
    HfFileSystem.clear_instance_cache()
    from hfdistac.data import revisions

    mp.setattr(revisions, "_REVISIONS", {})  # dataset SHAs resolved against another test's server


@pytest.fixture
def hub_env(hub_server, tmp_path, monkeypatch) -> Iterator[HubEnv]:
    """Point the HF stack at the loopback Hub for one test (undone afterwards).

    Environment: ``HF_ENDPOINT`` = server, ``HF_TOKEN`` = ``DUMMY_TOKEN``, ``HF_HUB_DISABLE_XET=1``,
    ``HF_HUB_OFFLINE=0``, ``HF_HOME`` = a fresh tmp dir; plus the imported copies of those values.
    """
    hub_server.clear()
    home = tmp_path / "hf_home"
    home.mkdir()
    for key, value in {"HF_ENDPOINT": hub_server.url, "HF_TOKEN": DUMMY_TOKEN, "HF_HUB_DISABLE_XET": "1",
                       "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
                       "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0"}.items():
        monkeypatch.setenv(key, value)
    for key in ("HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE",
                "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    _patch_constants(monkeypatch, hub_server.url, home)
    _set_offline(monkeypatch, False)
    yield HubEnv(hub_server, hub_server.url, DUMMY_TOKEN, home, home / "hub", monkeypatch)
    from huggingface_hub import HfFileSystem

    HfFileSystem.clear_instance_cache()
