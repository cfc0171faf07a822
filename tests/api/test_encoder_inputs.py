"""Encoder.__call__ takes uint8 (0..255) or float (0..1) images and refuses anything else with one line."""

from __future__ import annotations

import pytest
import torch

import gensis
from gensis.errors import UserError


@pytest.mark.parametrize("spec", ["run", "pixels"])
def test_uint8_and_unit_float_give_the_same_features(spec, encoder_run):
    enc = gensis.load_encoder(encoder_run if spec == "run" else "pixels")
    size = enc.image_size
    u8 = torch.randint(0, 256, (3, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ref = enc(u8)
    assert ref.shape == (3, enc.dim) and ref.dtype == torch.float32
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        f = enc(u8.to(dtype) / 255)
        tol = 1e-5 if dtype in (torch.float32, torch.float64) else 2e-2
        assert torch.allclose(f, ref, atol=tol), (dtype, (f - ref).abs().max())
    # resized inputs: float and uint8 are both resized (antialiased) to image_size
    big = torch.rand(2, 3, size * 2, size * 2)
    assert enc(big).shape == (2, enc.dim)


@pytest.mark.parametrize("images, words", [
    (torch.randint(0, 256, (2, 3, 16, 16)).float(), "unscaled 0..255"),              # float but 0..255
    ((torch.rand(2, 3, 16, 16) - 0.45) / 0.22, "normalized by a mean/std"),         # already standardized
    (torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.int64), "uint8 (0..255) or float (0..1), got torch.int64"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.bool), "got torch.bool"),
    (torch.zeros(2, 16, 16, 3, dtype=torch.uint8), "3 colour channels, got shape (2, 16, 16, 3)"),
    (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
])
def test_other_inputs_are_one_line_user_errors(images, words, encoder_run):
    enc = gensis.load_encoder(encoder_run)
    with pytest.raises(UserError) as e:
        enc(images)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_slightly_out_of_range_floats_are_accepted(encoder_run):
    """Resampling overshoot (e.g. bicubic) leaves values a little outside [0, 1]: not an error."""
    enc = gensis.load_encoder(encoder_run)
    x = torch.rand(2, 3, enc.image_size, enc.image_size) * 1.2 - 0.1
    assert torch.isfinite(enc(x)).all()
