"""Each column of the slide demo's table is computed from its own encoder, embeddings and predictions: the whole
demo at smoke size on a tiny synthetic slide (DINO and Gen-DINO tie there: the table must say why, and it must
never show two columns equal by construction)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("openslide")
pytest.importorskip("h5py")

from wsi_slides import BACKGROUND, make_svs  # noqa: E402

LABELS = ("dino", "gendino", "random")


def _slide(path):
    """A 20x slide (0.5 µm/px) with 6 tissue patches of 3×4 tiles of 32 µm, one per 160 µm region, three stain
    strengths: 72 tiles at 10x, 6 region bags of 12 tiles."""
    rng = np.random.default_rng(0)
    img = np.full((768, 1088, 3), BACKGROUND, np.uint8)
    bases = [(230, 150, 210), (200, 100, 170), (150, 50, 120)]
    for i in range(6):
        r, c = divmod(i, 3)
        x, y = 64 + 320 * c, 64 + 320 * r        # level-0 px; a region is 320 px, a 10x tile 64 px
        tex = rng.integers(-30, 30, (192, 256, 3), dtype=np.int16)
        img[y:y + 192, x:x + 256] = np.clip(np.array(bases[i % 3], np.int16) + tex, 0, 255).astype(np.uint8)
    return make_svs(path, img, mpp=0.5, downsamples=(1, 2), tile=128)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from gensis.wsi.demo import run_wsi_demo

    d = tmp_path_factory.mktemp("wsidemo")
    summary = run_wsi_demo(d / "out", slide=_slide(d / "tiny.svs"), preset="smoke", mil_preset="smoke", quiet=True)
    return d / "out", summary


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_column_has_its_own_encoder_embeddings_and_predictions(demo):
    from gensis.mil.bags import read_bag
    from gensis.mil.metrics import METRICS, all_metrics
    from gensis.rundir import RunDir

    out, summary = demo
    assert list(summary["results"]) == list(LABELS)
    # two trained encoders, Gen-DINO with its bank
    assert _sha(out / "dino" / "teacher_backbone.safetensors") != _sha(out / "gendino" / "teacher_backbone.safetensors")
    assert RunDir(out / "gendino").config()["gen"]["interp"] == "bank"
    assert RunDir(out / "dino").config()["gen"]["interp"] == "none"
    assert RunDir(out / "gendino").manifest()["inputs"]["bank_identity"]
    # the random column is the runs' architecture at train.seed, untrained
    bag = read_bag(sorted((out / "embed-random").glob("*.h5"))[0])
    assert bag.attrs["encoder_identity"].startswith("random-seed0-")
    # distinct embeddings of the same tiles in every column
    feats = {}
    for n in LABELS:
        bags = sorted((out / f"regions-{n}").glob("*.h5"))
        assert len(bags) == summary["n_regions"][n] >= 6
        feats[n] = [read_bag(f) for f in bags]
    for a in LABELS:
        for b in LABELS[LABELS.index(a) + 1:]:
            assert all((x.coords == y.coords).all() for x, y in zip(feats[a], feats[b]))
            assert any(not np.array_equal(x.features, y.features) for x, y in zip(feats[a], feats[b])), (a, b)
    fps = [summary["columns"][n]["embeddings"] for n in LABELS]
    assert len(set(fps)) == 3
    # each column's metrics are those of its own MIL run's predictions, on its own region bags
    table = (out / "results.md").read_text().splitlines()
    for j, n in enumerate(LABELS):
        run = out / f"mil-{n}"
        meta = json.loads((run / "mil.json").read_text())
        assert meta["feats"] == str((out / f"regions-{n}").resolve())
        metrics = json.loads((run / "metrics.json").read_text())
        for split in meta["splits"]:
            res = json.loads((run / split / "predictions.json").read_text())
            got = all_metrics(np.asarray(res["y"]), np.asarray(res["probs"]))
            for m in METRICS:
                want = metrics["splits"][split][m]
                assert (want is None and np.isnan(got[m])) or got[m] == pytest.approx(want)
        for i, m in enumerate(METRICS):
            row = table[2 + i]
            assert row.startswith(m)
            mean, std = metrics["summary"][m]["mean"], metrics["summary"][m]["std"]
            cell = row[20 + 16 * j:20 + 16 * (j + 1)].strip()
            assert cell == f"{float('nan') if mean is None else mean:.3f} ± {float('nan') if std is None else std:.3f}"


def test_table_reports_what_columns_come_from_and_explains_ties(demo):
    from gensis.wsi.demo import format_results
    from gensis.wsi.provenance import column_evidence

    out, summary = demo
    text = (out / "results.md").read_text()
    assert "p(true class)" in text and "1-CKA to DINO" in text and "embeddings" in text
    results = {n: json.loads((out / f"mil-{n}" / "metrics.json").read_text()) for n in LABELS}
    ev = column_evidence(out, LABELS)
    assert ev["dino"]["cka"]["dino"] == 1.0 and ev["gendino"]["cka"]["dino"] < 1.0
    # two columns forced to print the same numbers get a note with how close they are, not a silent tie
    other = {m: {"mean": 0.123, "std": 0.0} for m in results["random"]["summary"]}
    tied = {"dino": results["dino"], "gendino": {**results["gendino"], "summary": results["dino"]["summary"]},
            "random": {**results["random"], "summary": other}}
    (note,) = [ln for ln in format_results(tied, ev).splitlines() if ln.startswith("note:")]
    assert note.startswith("note: DINO and Gen-DINO tie on every metric, from different embeddings")
    assert f"({ev['dino']['embeddings']}, {ev['gendino']['embeddings']}; 1 - linear CKA" in note
    assert "1 - CKA to the random init: DINO" in note
    all3 = {n: {**results[n], "summary": results["dino"]["summary"]} for n in LABELS}
    (note,) = [ln for ln in format_results(all3, ev).splitlines() if ln.startswith("note:")]
    assert note.startswith("note: DINO, Gen-DINO and random init tie on every metric") and "to the random" not in note
    untied = {"dino": results["dino"], "random": tied["random"]}
    assert "note:" not in format_results(untied, {n: ev[n] for n in untied})


def test_columns_from_identical_embeddings_or_predictions_are_refused(demo, tmp_path):
    from gensis.wsi.demo import format_results
    from gensis.wsi.provenance import column_evidence

    out, _ = demo
    results = {n: json.loads((out / f"mil-{n}" / "metrics.json").read_text()) for n in LABELS}
    # the bug this guards against: the Gen-DINO column reading DINO's embeddings (or its MIL run)
    for what, copy in (("tile embeddings", "regions"), ("MIL predictions", "mil")):
        bad = tmp_path / what.replace(" ", "-")
        for n in ("dino", "gendino"):
            shutil.copytree(out / f"regions-{n}", bad / f"regions-{n}")
            shutil.copytree(out / f"mil-{n}", bad / f"mil-{n}")
        shutil.rmtree(bad / f"{copy}-gendino")
        shutil.copytree(out / f"{copy}-dino", bad / f"{copy}-gendino")
        ev = column_evidence(bad, ["dino", "gendino"])
        with pytest.raises(RuntimeError, match=f"DINO and Gen-DINO come from identical {what}"):
            format_results({n: results[n] for n in ("dino", "gendino")}, ev)


def test_printed_embed_line_of_the_random_column_reproduces_it(demo, tmp_path):
    import subprocess
    import sys

    from gensis.mil.bags import read_bag

    out, _ = demo
    cmd = [sys.executable, "-m", "gensis.cli.main", "wsi", "embed", "--encoder", "random", "--like", str(out / "dino"),
           "--tiles", str(out / "tiles"), "--out", str(tmp_path / "feats"), "--workers", "0", "--quiet"]
    subprocess.run(cmd, check=True, capture_output=True)
    (ours,) = sorted((out / "embed-random").glob("*.h5"))
    again = read_bag(tmp_path / "feats" / ours.name)
    np.testing.assert_array_equal(again.features, read_bag(ours).features)
    bad = subprocess.run([*cmd[:6], "pixels", *cmd[7:]], capture_output=True, text=True)
    assert bad.returncode == 2 and "--like goes with --encoder random" in bad.stderr


def test_linear_cka_is_one_up_to_rotation_and_scale_and_low_for_unrelated_embeddings():
    from gensis.wsi.provenance import linear_cka

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x, 3 * x @ q + 1) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(200, 8))) < 0.2
    assert linear_cka(x, x[:, :4]) < 1.0


def test_random_like_run_is_the_initialisation_of_that_run(demo, tmp_path):
    """A teacher that never moves (momentum 1) keeps the run's initial weights: ``--encoder random --like RUN``
    rebuilds exactly those (RUN's architecture at RUN's train.seed)."""
    import torch

    from gensis.cli.main import main
    from gensis.rundir import load_tensors
    from gensis.wsi.embed import _encoder

    out, _ = demo
    run = tmp_path / "frozen-teacher"
    assert main(["pretrain", "--data", f"tiles:{out / 'tiles'}@all", "--out", str(run), "--preset", "smoke",
                 "dino.momentum_teacher=1.0", "optim.epochs=1", "train.seed=3"]) == 0
    init = _encoder("random", run).model.state_dict()
    teacher = load_tensors(run / "teacher_backbone.safetensors")
    assert set(teacher) == set(init) and all(torch.equal(teacher[k], init[k]) for k in teacher)
    seed0 = _encoder("random", out / "dino").model.state_dict()   # another seed: other weights
    assert not all(torch.equal(seed0[k], init[k]) for k in init)


def test_the_same_command_again_finds_every_stage_up_to_date(demo, capsys):
    """Run last on the module's demo: the same call again redoes no stage (keys of the resolved configs and
    inputs are the same), and the results are those of the first run."""
    from gensis.wsi.demo import run_wsi_demo

    out, summary = demo
    capsys.readouterr()
    again = run_wsi_demo(out, slide=out.parent / "tiny.svs", preset="smoke", mil_preset="smoke", quiet=True)
    err = capsys.readouterr().err
    stages = [s for s in json.loads((out / "stages.json").read_text()) if not s.startswith("_")]
    assert len(stages) >= 11 and all(f"[{s}] up to date" in err for s in stages)
    assert "running" not in err and "resuming" not in err
    assert again["results"] == summary["results"] and again["columns"] == summary["columns"]
