"""``pretrain --bank`` with ``gen.alphas`` the bank does not hold is refused before any work: the disentanglement
target mixes the teacher's outputs at the α asked for, so a bank image interpolated at another α (the nearest
stored one, which the reader serves) trained on a target that did not match it, with only a Python warning."""

import numpy as np
import pytest
import torch

from gensis.bank import BankReader
from gensis.cli.main import main
from gensis.data.sources import open_data
from gensis.errors import UserError
from gensis.ssl.gen import GenViews

STORED = [0.3, 0.7]  # the reference bank's (conftest)


def _gen(alphas):
    return {"gen": {"generative_prob": 0.0, "generative_views": [1], "local_from_bank": False, "interp": "bank",
                    "alphas": alphas, "disent_weight": 1.0, "bank_min_score": None, "bank_keep_quantile": None,
                    "bank_weighting": "none"}}


def test_alphas_the_bank_lacks_are_refused_naming_the_ones_it_holds(reference_bank, tiny_npz):
    ds = open_data(str(tiny_npz), "train", 0.2, 0, None)
    with pytest.raises(UserError, match=r"holds interpolations at alphas \[0.3,0.7\], not at \[0.5\] of "
                                        r"gen.alphas=\[0.5\]: train with gen.alphas=\[0.3,0.7\]"):
        GenViews(_gen([0.5]), ds, None, BankReader(reference_bank))
    with pytest.raises(UserError, match=r"not at \[0.4\] of gen.alphas=\[0.3,0.4\]"):
        GenViews(_gen([0.3, 0.4]), ds, None, BankReader(reference_bank))
    gv = GenViews(_gen([0.7]), ds, None, BankReader(reference_bank))  # a stored one: the target's α is the image's
    _, _, alpha = gv.interpolation(np.arange(8), torch.zeros(8, 3, 16, 16, dtype=torch.uint8))
    assert torch.equal(alpha, torch.full((8,), 0.7))


def test_pretrain_refuses_them_in_one_line_before_making_the_run(reference_bank, tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["pretrain", "--data", str(tiny_npz), "--bank", str(reference_bank), "--out", str(out), "--preset",
               "smoke", "--quiet", "optim.batch_size=8", "gen.alphas=[0.5]"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "train with gen.alphas=[0.3,0.7]" in err, err
    assert not out.exists()
