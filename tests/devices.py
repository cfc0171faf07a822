"""Devices a test that can run on CUDA is parametrized over.

    from devices import DEVICES

    @pytest.mark.parametrize("device", DEVICES)
    def test_x(device): ...

The cuda case carries the ``cuda`` marker: `pytest -m cuda` selects exactly the GPU runs, and
``tests/conftest.py`` skips them where ``torch.cuda.is_available()`` is False.
"""

import pytest

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]
CUDA = [pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]
