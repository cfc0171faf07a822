"""A batch of one image per process for a method that needs two is one line before any work (SimCLR printed
BatchNorm's ValueError traceback; DINOv2's KoLeo made the loss non-finite after some steps, and the NaN line
blamed optim.lr); methods that work on one image still run."""

import numpy as np
import pytest

from gensis.cli.main import main
from gensis.config import load_config
from gensis.errors import UserError
from gensis.ssl.methods import build_method
from gensis.ssl.train import check_images_per_process

TINY = ["model.depth=1", "model.embed_dim=32", "model.num_heads=2"]


@pytest.mark.parametrize("method, overrides, why", [
    ("simclr", [], "projection MLP has BatchNorm"),
    ("dinov2", [], r"dinov2.koleo_loss_weight=0.1: KoLeo"),
    ("ibot", ["ibot.koleo_loss_weight=0.1"], "ibot.koleo_loss_weight=0.1"),
    ("dino", ["dino.koleo_loss_weight=0.1"], "dino.koleo_loss_weight=0.1"),
    ("dino", ["dino.use_bn_in_head=true"], "dino.use_bn_in_head=true"),
])
def test_one_image_per_process_is_refused_where_a_method_needs_two(method, overrides, why):
    m = build_method(load_config("pretrain", "smoke", [f"method={method}", *TINY, *overrides]))
    with pytest.raises(UserError, match=rf"optim.batch_size=1 is 1 image per step, and {method} needs at least 2 "
                                        rf"\(.*{why}.*\): set optim.batch_size=2 or more"):
        check_images_per_process(m, 1, 1)
    with pytest.raises(UserError, match="is 1 image per step on each of the 2 processes.*optim.batch_size=4 or more"):
        check_images_per_process(m, 2, 2)
    check_images_per_process(m, 2, 1)


@pytest.mark.parametrize("method", ["dino", "ibot"])
def test_methods_that_work_on_one_image_are_not_refused(method):
    check_images_per_process(build_method(load_config("pretrain", "smoke", [f"method={method}", *TINY])), 1, 1)


def test_simclr_batch_of_one_is_one_line(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", images=np.zeros((10, 8, 8, 3), np.uint8))
    rc = main(["pretrain", "--method", "simclr", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"),
               "--preset", "smoke", "--quiet", "optim.batch_size=1", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "simclr needs at least 2" in err, err
