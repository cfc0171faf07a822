import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
# bf16 autocast only with AMX, as before AVX512-BF16 CPUs were measured: the suite's numbers stay the same on
# whichever CPU it runs (tests/core/test_device.py checks the choice itself)
os.environ.setdefault("GENSIS_CPU_BF16", "amx")
os.environ.setdefault("GENSIS_CACHE_DIR", tempfile.mkdtemp(prefix="gensis-test-features-"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped (not errors) where torch sees no CUDA device."""
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
