"""MIL config values that cannot work fail when the config is read (one line naming the key), not in fold 0."""

import numpy as np
import pytest

from gensis.api import mil_config
from cli_asserts import check_second_run_refused

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


def test_labels_csv_mistakes_are_one_line_naming_the_line(tmp_path, capsys):
    """A row without a label was an AttributeError traceback, a non-UTF-8 file a UnicodeDecodeError one; a slide
    listed twice was trained on twice (or took its last label silently): one line naming the file and line, exit
    2, no run written. Excel's "CSV UTF-8" (a BOM before 'slide') was 'needs columns slide and label'."""
    from gensis.wsi.dataset import read_labels_csv

    feats, _ = _bags(tmp_path)
    cases = {"short.csv": ("slide,label\ns0,a\ns1,b\ns2\ns3,b\n", "line 4: slide s2 has no label"),
             "empty-label.csv": ("slide,label\ns0,a\ns1, \ns2,a\n", "line 3: slide s1 has no label"),
             "twice.csv": ("slide,label\ns0,a\ns1,b\ns0,b\ns2,a\n", "line 4: slide s0 is listed again (first on line 2)"),
             "binary.csv": (b"\xff\xfe\x00\x01garbage", "not a UTF-8 text file")}
    for name, (text, msg) in cases.items():
        p = tmp_path / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        out = tmp_path / f"mil-{name}"
        assert main(["mil", "train", "--feats", str(feats), "--labels", str(p), "--out", str(out), "--preset",
                     "smoke", "optim.epochs=1", "--quiet"]) == 2, name
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and msg in err[0] and str(p) in err[0], (name, err)
        assert not (out / "metrics.json").exists()
        with pytest.raises(UserError, match=msg.split(":")[-1].strip()[:20]):
            read_labels_csv(p)  # the tiles:TILES?labels= reader is the same
    bom = tmp_path / "excel.csv"
    bom.write_bytes("\ufeffslide,label\ns0,a\ns1,b\ns2,a\ns3,b\n".encode())
    assert read_labels_csv(bom)[0] == {"s0": "a", "s1": "b", "s2": "a", "s3": "b"}
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(bom), "--out", str(tmp_path / "ok"),
                 "--preset", "smoke", "optim.epochs=1", "--quiet"]) == 0


def test_train_and_predict_never_write_into_a_users_folder(tmp_path, capsys):
    """`mil train --out DIR` replaced DIR/config.yaml (and predictions.csv, metrics.json) of a user's folder,
    `mil predict --out DIR` its predictions.csv: both now refuse a non-empty folder they did not write (one line,
    exit 2, nothing touched), and take back their own folder (rerun); a killed run's temporary files go."""
    import os

    feats, labels = _bags(tmp_path)
    user = tmp_path / "project"
    user.mkdir()
    (user / "config.yaml").write_text("my: settings\n")
    (user / "predictions.csv").write_text("id,score\n1,0.5\n")
    before = {p.name: p.read_bytes() for p in user.iterdir()}
    train = ["mil", "train", "--feats", str(feats), "--labels", str(labels), "--preset", "smoke", "optim.epochs=1",
             "--quiet", "--out"]
    capsys.readouterr()
    assert main([*train, str(user)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "not empty and not a MIL run" in err[0], err
    run = tmp_path / "mil"
    assert main([*train, str(run)]) == 0
    dead = 2 ** 22 + 12345  # above any pid_max default: no such process
    stale = run / "fold-0" / f".gensis-tmp-model.safetensors.{dead}-0123abcd.tmp"
    stale.write_bytes(b"half")
    assert main([*train, str(run)]) == 0 and not stale.exists()  # its own folder, rerun
    predict = ["mil", "predict", "--run", str(run), "--feats", str(feats), "--no-heatmaps", "--out"]
    assert main([*predict, str(user)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "not empty and not a MIL predictions folder" in err[0], err
    assert {p.name: p.read_bytes() for p in user.iterdir()} == before
    preds = tmp_path / "preds"
    assert main([*predict, str(preds)]) == 0 and main([*predict, str(preds)]) == 0  # its own output again
    assert (preds / "predictions.csv").read_text().startswith("slide,predicted,p_a,p_b")
    assert not os.path.exists(run / ".gensis.lock")


def test_two_predicts_into_one_out_the_second_is_refused(tmp_path, capsys, monkeypatch):
    """`mil predict` took no folder lock: two runs into one --out could interleave their predictions.csv and
    heatmaps. The second is refused in one line (exit 2), before loading when the folder exists, else when it
    comes to write; the first's files are untouched; the lock is released when a predict ends."""
    import gensis.mil.predict as mp

    feats, labels = _bags(tmp_path)
    run = tmp_path / "mil"
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(run), "--preset",
                 "smoke", "optim.epochs=1", "--quiet"]) == 0
    predict = ["mil", "predict", "--run", str(run), "--feats", str(feats), "--no-heatmaps", "--out"]
    check_second_run_refused(main, predict, tmp_path / "preds", tmp_path / "new", capsys, monkeypatch, mp, "list_bags")


def test_a_refused_mil_predict_or_train_leaves_no_empty_out(tmp_path, capsys, monkeypatch):
    """`mil predict` found bags of the wrong size (or without a thumbnail for --heatmaps) only after it had made
    --out: the empty folder (and the parents made for it) stayed. Now they go, as when `mil train` fails before
    its first file (a full disk); a folder that existed before is kept."""
    import errno

    import gensis.rundir as rundir
    from gensis.mil.bags import write_bag

    feats, labels = _bags(tmp_path)
    run = tmp_path / "mil"
    train = ["mil", "train", "--feats", str(feats), "--labels", str(labels), "--preset", "smoke", "optim.epochs=1",
             "--quiet", "--out"]
    assert main([*train, str(run)]) == 0
    wide = tmp_path / "wide"
    write_bag(wide / "s0.h5", np.zeros((3, 5)), np.zeros((3, 2)), {})  # 5 features; the run was trained on 4
    predict = ["mil", "predict", "--run", str(run), "--out"]
    capsys.readouterr()
    assert main([*predict, str(tmp_path / "new" / "p"), "--feats", str(wide), "--no-heatmaps"]) == 2
    assert "embeddings of size 5" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert main([*predict, str(tmp_path / "p"), "--feats", str(feats)]) == 2  # heatmaps: the bags name no thumbnail
    assert "names no thumbnail" in capsys.readouterr().err and not (tmp_path / "p").exists()
    (tmp_path / "empty").mkdir()
    assert main([*predict, str(tmp_path / "empty"), "--feats", str(wide), "--no-heatmaps"]) == 2
    assert (tmp_path / "empty").is_dir()

    def full_disk(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir, "atomic_write_json", full_disk)  # mil.json, its first file
    assert main([*train, str(tmp_path / "new" / "m")]) != 0
    assert not (tmp_path / "new").exists()


def test_train_mil_quiet_shows_no_progress_bar(tmp_path, capsys, monkeypatch):
    """gensis.train_mil(..., quiet=True) (and `mil train --quiet`) still drew each fold's epoch bar."""
    import gensis

    monkeypatch.delenv("GENSIS_NO_PROGRESS", raising=False)  # quiet alone must silence the bars
    feats, labels = _bags(tmp_path)
    gensis.train_mil(feats, labels, tmp_path / "q", preset="smoke", overrides={"optim.epochs": 1}, quiet=True)
    assert capsys.readouterr().err == ""
    gensis.train_mil(feats, labels, tmp_path / "loud", preset="smoke", overrides={"optim.epochs": 1}, quiet=False)
    assert "fold-0" in capsys.readouterr().err  # the bar this test would miss
