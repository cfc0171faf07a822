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


def _bags(tmp_path, n=4):
    from gensis.mil.bags import write_bag

    rng = np.random.default_rng(0)
    for i in range(n):
        write_bag(tmp_path / "feats" / f"s{i}.h5", rng.normal(size=(3, 4)) + i % 2, np.zeros((3, 2)), {})
    (tmp_path / "labels.csv").write_text("slide,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(n)))
    return tmp_path / "feats", tmp_path / "labels.csv"


def test_predict_on_bags_without_a_thumbnail_or_into_the_run_is_one_line(tmp_path, capsys):
    feats, labels = _bags(tmp_path)
    run = tmp_path / "mil"
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(run), "--preset", "smoke",
                 "optim.epochs=1", "--quiet"]) == 0
    cv = (run / "predictions.csv").read_text()
    capsys.readouterr()
    assert main(["mil", "predict", "--run", str(run), "--feats", str(feats), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "slide s0 names no thumbnail" in err and "pass --no-heatmaps" in err and "Traceback" not in err
    assert main(["mil", "predict", "--run", str(run), "--feats", str(feats), "--out", str(run), "--no-heatmaps"]) == 2
    assert "is the MIL run itself" in capsys.readouterr().err
    assert (run / "predictions.csv").read_text() == cv
    assert main(["mil", "predict", "--run", str(run), "--feats", str(feats), "--out", str(tmp_path / "p"),
                 "--no-heatmaps"]) == 0


def test_a_metric_undefined_in_some_splits_is_not_shown_with_a_zero_std():
    from gensis.mil.train import format_table, summarize

    nan = float("nan")
    per = {"fold-0": {"accuracy": 0.0, "balanced_accuracy": 0.0, "macro_f1": 0.0, "macro_auc_ovr": nan,
                      "quadratic_kappa": 0.0},
           "fold-1": {"accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0, "macro_auc_ovr": nan,
                      "quadratic_kappa": nan}}
    row = format_table(per, summarize(per)).splitlines()[3].split()
    assert row == ["mean±std", "0.500±0.707", "0.500±0.707", "0.500±0.707", "n/a", "0.000±n/a", "(1/2)"]
