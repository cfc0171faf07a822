import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
# no bf16 autocast on the CPU: the suite's numbers stay the same on whichever CPU it runs. ("amx" was pinned before,
# which kept AVX512-BF16 CPUs in fp32 but left AMX CPUs in bf16, where the diffusers-export comparisons, made in fp32
# without gensis, failed by 0.02; tests/core/test_device.py checks the choice itself, tests that want bf16 ask for it)
os.environ.setdefault("GENSIS_CPU_BF16", "off")
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
