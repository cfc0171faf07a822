"""Without matplotlib (a core install, no 'report' extra) the commands that draw say so in one line before any work:
`eval umap` was a ModuleNotFoundError traceback after its features and fit, `mil predict` after its predictions,
`demo` at its report, after the whole pipeline."""

import sys

import numpy as np
import pytest

from gensis.cli.main import main


@pytest.fixture
def no_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)


def _npz(path):
    labels = np.arange(30) % 3
    np.savez(path, images=np.random.default_rng(0).integers(0, 255, (30, 8, 8, 3), dtype=np.uint8), labels=labels)
    return path


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_eval_umap_says_so_before_its_features(tmp_path, capsys, monkeypatch, no_matplotlib):
    import gensis.eval.features as features

    def no_work(*a, **k):
        raise AssertionError("features extracted before the check")

    monkeypatch.setattr(features, "dataset_features", no_work)
    png = tmp_path / "m.png"
    assert main(["eval", "umap", "--encoder", "pixels", "--data", str(_npz(tmp_path / "d.npz")), "--per-class", "5",
                 "--method", "tsne", "--out", str(png), "--quiet"]) == 2
    line = _one_line(capsys)
    assert "needs matplotlib" in line and "gensis[report]" in line and not png.exists()


def test_mil_predict_says_so_first_unless_no_heatmaps(tmp_path, no_matplotlib):
    from gensis.errors import UserError
    from gensis.mil.predict import predict_slides

    with pytest.raises(UserError, match="heatmaps.*needs matplotlib"):
        predict_slides(tmp_path / "no-run", tmp_path / "feats", tmp_path / "pred")
    with pytest.raises(UserError) as e:  # no heatmaps: matplotlib is not needed, the next check speaks
        predict_slides(tmp_path / "no-run", tmp_path / "feats", tmp_path / "pred", heatmaps=False)
    assert "matplotlib" not in str(e.value)


def test_demo_says_so_before_its_first_stage(tmp_path, capsys, monkeypatch, no_matplotlib):
    import gensis.pipeline.demo as demo

    def no_pipeline(*a, **k):
        raise AssertionError("the pipeline started before the check")

    monkeypatch.setattr(demo, "run_pipeline", no_pipeline)
    assert main(["demo", "--preset", "smoke", "--data", "builtin:digits", "--out", str(tmp_path / "d"),
                 "--quiet"]) == 2
    assert "the demo's report" in _one_line(capsys)
