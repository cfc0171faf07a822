"""The DINO and disentanglement losses on a GPU give the CPU's values (same inputs, fp32)."""

import pytest
import torch

from devices import DEVICES
from gensis.ssl.dino_loss import DINOLoss
from gensis.ssl.disentangle_loss import disentanglement_loss


@pytest.mark.parametrize("device", DEVICES)
def test_dino_and_disentanglement_losses_match_cpu(device):
    g = torch.Generator().manual_seed(0)
    B, K = 6, 32
    s = torch.randn(4 * B, K, generator=g)  # 2 global + 2 local crops
    t = torch.randn(2 * B, K, generator=g)
    s_int, t2 = torch.randn(B, K, generator=g), torch.randn(B, K, generator=g)
    alpha = torch.rand(B, generator=g)

    def losses(dev):
        fn = DINOLoss(K).to(dev)
        fn.center.copy_(torch.linspace(-0.1, 0.1, K))
        d = fn(s.to(dev), t.to(dev), 0.04, 2)
        dis = disentanglement_loss(fn, s_int.to(dev), t[:B].to(dev), t2.to(dev), alpha.to(dev), 0.04)
        return d, dis, fn.center

    ref = losses("cpu")
    got = losses(device)
    for a, b in zip(got, ref):
        assert a.device.type == device
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5)
