"""The demo's eval stage extracts each encoder's test features once (k-NN and linear probe share them), and its
rows are exactly those of ``knn_eval`` and ``linear_eval`` run on their own."""

import numpy as np

import gensis.eval.features as features
from gensis.data.sources import open_data
from gensis.eval.knn import knn_eval
from gensis.eval.linear import LinearConfig, linear_eval
from gensis.models.encoder import load_encoder
from gensis.pipeline.results import LINEAR_EPOCHS, evaluate


def _npz(tmp_path, n=150):
    g = np.random.default_rng(0)
    labels = np.arange(n) % 3
    images = (g.random((n, 28, 28)) * 60).astype(np.uint8)
    for c in range(3):
        images[labels == c, c * 9:c * 9 + 9, :] += 150
    path = tmp_path / "toy.npz"
    np.savez(path, images=images, labels=labels)
    return str(path)


def test_eval_rows_equal_separate_protocols_and_test_features_are_extracted_once(tmp_path, monkeypatch):
    data = _npz(tmp_path)
    calls = []
    extract = features.extract_features

    def counting(encoder, ds, *args, **kw):
        calls.append((encoder.identity, ds.identity))
        return extract(encoder, ds, *args, **kw)

    monkeypatch.setattr(features, "extract_features", counting)
    rows = evaluate(tmp_path / "demo", data, "smoke", linear=True)  # no runs: the two baselines
    assert set(rows) == {"pixels", "random"}
    test_id = open_data(data, "val", 0.2, 0).identity
    for name in ("pixels", "random"):
        enc_id = load_encoder(name, image_size=28).identity
        assert calls.count((enc_id, test_id)) == 1  # k-NN and linear probe from one extraction
    monkeypatch.setattr(features, "extract_features", extract)

    train, test = open_data(data, "train", 0.2, 0), open_data(data, "val", 0.2, 0)
    for name in ("pixels", "random"):
        enc = load_encoder(name, image_size=28)
        knn = knn_eval(enc, train, test)
        lin = linear_eval(enc, train, test, LinearConfig(epochs=LINEAR_EPOCHS["smoke"]))
        assert rows[name]["knn"]["results"] == knn["results"]
        assert rows[name]["linear"]["results"] == lin["results"]
