"""The batched DINO augmentation runs on the training device: right shapes, resumable random state, and on a
GPU no host synchronisation per view (`torch.cuda.set_sync_debug_mode("error")` turns one into an error)."""

import pytest
import torch

from devices import CUDA, DEVICES
from gensis.data.batch_augment import BatchDINOAugmentation, color_jitter
from gensis.data.transforms import MultiCropConfig

CFG = MultiCropConfig(global_size=16, local_size=8, n_local=2, global_scale=(0.4, 1.0), local_scale=(0.1, 0.4))


def _images(n: int = 6, size: int = 20) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.mark.parametrize("device", DEVICES)
def test_views_shapes_device_and_resumable_state(device):
    aug = BatchDINOAugmentation(CFG, seed=3, device=device)
    images = _images()
    views = aug(images)
    assert [tuple(v.shape) for v in views] == [(6, 3, 16, 16)] * 2 + [(6, 3, 8, 8)] * 2
    assert all(v.device.type == device and torch.isfinite(v).all() for v in views)
    state = aug.state()
    assert state.device.type == "cpu" and state.dtype == torch.uint8  # what a checkpoint stores
    a = aug(images)
    aug.set_state(state)
    b = aug(images)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], views[0])  # the state moved on between the two calls


def test_cpu_keeps_one_generator_and_its_stream():
    """On the CPU the jitter order is drawn from the same generator as everything else (results and checkpoint
    format as before the GPU fix): the state is exactly that generator's."""
    aug = BatchDINOAugmentation(CFG, seed=5, device="cpu")
    assert aug.order_g is aug.g
    assert torch.equal(aug.state(), torch.Generator().manual_seed(5).get_state())
    x = torch.rand(4, 3, 8, 8)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(color_jitter(x, 0.8, 1.0, g1), color_jitter(x, 0.8, 1.0, g2, g2))


@pytest.mark.parametrize("device", CUDA)
def test_gpu_augmentation_never_syncs_with_the_host(device):
    aug = BatchDINOAugmentation(CFG, seed=0, device=device)
    images = _images().to(device)
    aug(images)  # first call: module constants are copied to the device once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            views = aug(images)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert views[0].is_cuda
    # the order generator is a CPU one, saved with the CUDA one
    assert aug.order_g.device.type == "cpu"
    s = aug.state()
    assert len(s) == len(aug.g.get_state()) + len(aug.order_g.get_state())
