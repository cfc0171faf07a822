"""Fixtures of the public-API tests: tiny run folders made without training (``tiny_runs.py``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("GENSIS_NO_PROGRESS", "1")

import tiny_runs  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def images_npz(tmp_path_factory) -> Path:
    return tiny_runs.make_images(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture(scope="session")
def encoder_run(tmp_path_factory) -> Path:
    return tiny_runs.make_encoder_run(tmp_path_factory.mktemp("runs") / "dino")


@pytest.fixture(scope="session")
def vq_eldm_run(tmp_path_factory, encoder_run) -> Path:
    return tiny_runs.make_eldm_run(tmp_path_factory.mktemp("runs") / "eldm-vq", encoder_run, "vq")


@pytest.fixture(scope="session")
def pixel_eldm_run(tmp_path_factory, encoder_run) -> Path:
    return tiny_runs.make_eldm_run(tmp_path_factory.mktemp("runs") / "eldm-pixel", encoder_run, "pixel")


# A prelude for subprocesses that must not see gensis: any import of it fails.
NO_GENSIS = '''
import sys
class _NoGensis:
    def find_spec(self, name, path=None, target=None):
        if name == "gensis" or name.startswith("gensis."):
            raise ModuleNotFoundError("gensis is blocked in this test", name=name)
        return None
sys.meta_path.insert(0, _NoGensis())
sys.path = [p for p in sys.path if not p.rstrip("/").endswith("/src")]
'''


def run_without_gensis(code: str, cwd: Path) -> str:
    """Run ``code`` in ``python -I`` (no PYTHONPATH, no user site) with gensis blocked; returns stdout."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    script = NO_GENSIS + code + "\nassert not any(m == 'gensis' or m.startswith('gensis.') for m in sys.modules)\n"
    p = subprocess.run([sys.executable, "-I", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.fixture(scope="session")
def without_gensis():
    """without_gensis(code, cwd) -> stdout of ``code`` run in a Python that cannot import gensis."""
    return run_without_gensis


@pytest.fixture(scope="session")
def fake_bank(tmp_path_factory, images_npz) -> Path:
    """A complete bank (K=2, alphas 0.3/0.7) of the train split of ``images_npz``, by the fake generator."""
    from bank_builders import build_bank

    return build_bank(images_npz, tmp_path_factory.mktemp("banks") / "bank")
