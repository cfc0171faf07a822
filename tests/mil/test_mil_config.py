"""MIL config values that cannot work fail when the config is read (one line naming the key), not in fold 0."""

import numpy as np
import pytest

from gensis.api import mil_config
from gensis.cli.main import main
from gensis.errors import UserError


@pytest.mark.parametrize("item,msg", [("cv.folds=0", "cv.folds=0: must be an integer >= 2"),
                                      ("cv.folds=-3", "cv.folds=-3: must be an integer >= 2"),
                                      ("cv.folds=1", "cv.folds=1: must be an integer >= 2"),
                                      ("cv.seeds=0", "cv.seeds=0: must be an integer >= 1"),
                                      ("optim.accumulation=0", "optim.accumulation=0: must be an integer >= 1"),
                                      ("model.dropout=1", "model.dropout=1: must be"),
                                      ("model.hidden=0", "model.hidden=0: must be an integer >= 1"),
                                      ("run.device=gpu", "run.device=gpu: must be one of")])
def test_bad_values_fail_at_config_time(item, msg, capsys):
    with pytest.raises(UserError, match=msg.replace(".", r"\.")):
        mil_config(preset="smoke", overrides=[item])
    assert main(["mil", "train", "--feats", "f", "--labels", "l.csv", "--out", "o", "--print-config", item]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]


def test_more_folds_than_slides_names_the_key():
    from gensis.mil.cv import kfold

    with pytest.raises(UserError, match=r"cv\.folds=5: .* found 3; set cv\.folds=3 or fewer"):
        kfold(np.array([0, 1, 0]), np.array(["a", "b", "c"]), 5, seed=0)
    assert len(kfold(np.array([0, 1, 0]), np.array(["a", "b", "c"]), 3, seed=0)) == 3
