"""What a cohort table and a features folder can hold that made `mil train` / `mil predict` silently wrong.

Found by running the README's slide commands as a new user would (session 11 audit): a rerun into the same
``--out`` with re-embedded bags printed the old folds' numbers; bags of two encoders in one folder trained
together; `mil predict` scored bags of another encoder; one blank ``patient`` cell dropped patient grouping for
every slide; a ``split`` typo or a patient on both sides of the split went unnoticed; a class only on test rows
was never trained on; a ``slide`` column with file names (``A.svs``) matched no bag.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("h5py")

from gensis.cli.main import main  # noqa: E402
from gensis.errors import UserError  # noqa: E402

SMOKE = ["--preset", "smoke", "optim.epochs=1", "--quiet"]


def _bags(folder, n=6, encoder="enc-A", shift=0.0, dim=4):
    from gensis.mil.bags import write_bag

    rng = np.random.default_rng(0)
    for i in range(n):
        write_bag(folder / f"s{i}.h5", rng.normal(size=(3, dim)) + i % 2 + shift, np.zeros((3, 2)),
                  {"encoder": f"runs/{encoder}", "encoder_identity": encoder})
    return folder


def _csv(path, text):
    path.write_text(text)
    return path


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "error" in line]
    assert len(err) == 1, err
    return err[0]


def test_rerun_on_other_features_or_labels_is_refused_not_reused(tmp_path, capsys):
    feats = _bags(tmp_path / "dino")
    other = _bags(tmp_path / "gendino", encoder="enc-B", shift=5.0)
    labels = _csv(tmp_path / "l.csv", "slide,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(6)))
    run = tmp_path / "mil"
    train = ["mil", "train", "--labels", str(labels), "--out", str(run), *SMOKE, "cv.folds=2"]
    assert main([*train, "--feats", str(feats)]) == 0
    before = (run / "metrics.json").read_text()
    assert main([*train, "--feats", str(feats)]) == 0  # the same inputs: resumes (nothing to redo)
    capsys.readouterr()
    assert main([*train, "--feats", str(other)]) == 2
    assert "holds a MIL run on other features or labels" in _one_error_line(capsys)
    relabel = _csv(tmp_path / "l2.csv", "slide,label\n" + "".join(f"s{i},{'ba'[i % 2]}\n" for i in range(6)))
    assert main(["mil", "train", "--labels", str(relabel), "--out", str(run), *SMOKE, "cv.folds=2",
                 "--feats", str(feats)]) == 2
    assert (run / "metrics.json").read_text() == before


def test_bags_of_two_encoders_and_predict_on_another_encoder_are_refused(tmp_path, capsys):
    feats = _bags(tmp_path / "feats")
    labels = _csv(tmp_path / "l.csv", "slide,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(6)))
    mixed = _bags(tmp_path / "mixed")
    _bags(tmp_path / "mixed", n=2, encoder="enc-B")  # s0, s1 embedded again with another run (same size)
    capsys.readouterr()
    assert main(["mil", "train", "--feats", str(mixed), "--labels", str(labels), "--out", str(tmp_path / "m0"),
                 *SMOKE, "cv.folds=2"]) == 2
    line = _one_error_line(capsys)
    assert "come from different encoders" in line and "runs/enc-A" in line and "runs/enc-B" in line
    assert not (tmp_path / "m0").exists()
    run = tmp_path / "mil"
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(run), *SMOKE,
                 "cv.folds=2"]) == 0
    other = _bags(tmp_path / "other", encoder="enc-B")
    capsys.readouterr()
    predict = ["mil", "predict", "--run", str(run), "--no-heatmaps", "--feats"]
    assert main([*predict, str(other), "--out", str(tmp_path / "p-other")]) == 2
    assert "was embedded with runs/enc-B, not with the encoder" in _one_error_line(capsys)
    assert main([*predict, str(feats), "--out", str(tmp_path / "p"), "--quiet"]) == 0  # --quiet as mil train's


def test_blank_patient_cells_keep_the_other_patients_grouped(tmp_path, capsys):
    from gensis.mil.train import load_cohort, make_splits

    feats = _bags(tmp_path / "feats", n=8)
    # s0..s5 belong to three patients (two slides each), s6 and s7 have no patient cell
    rows = "".join(f"s{i},{'ab'[i % 2]},p{i // 2}\n" for i in range(6)) + "s6,a,\ns7,b,\n"
    labels = _csv(tmp_path / "l.csv", "slide,label,patient\n" + rows)
    cohort = load_cohort(feats, labels)
    assert "2 slides have no patient" in capsys.readouterr().err
    for seed in range(5):
        for sp in make_splits(cohort, {"cv": {"folds": 3, "seed": seed, "seeds": 1}}):
            train = {cohort.slides[i] for i in sp.train}
            test = {cohort.slides[i] for i in sp.test}
            for p in range(3):
                pair = {f"s{2 * p}", f"s{2 * p + 1}"}
                assert pair <= train or pair <= test, (seed, sp.name, pair)


@pytest.mark.parametrize("rows,msg", [
    ("s0,a,train\ns1,b,train\ns2,a,tset\ns3,b,test\ns4,a,test\ns5,b,train\n", "slide s2 has split 'tset'"),
    ("s0,a,train\ns1,b,train\ns2,a,\ns3,b,test\ns4,a,test\ns5,b,train\n", "slide s2 has split ''"),
    ("s0,a,train\ns1,a,train\ns2,a,train\ns3,b,test\ns4,a,test\ns5,a,train\n", "label 'b' is only on test rows"),
])
def test_split_column_mistakes_are_one_line(tmp_path, capsys, rows, msg):
    feats = _bags(tmp_path / "feats")
    labels = _csv(tmp_path / "l.csv", "slide,label,split\n" + rows)
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(tmp_path / "m"),
                 *SMOKE]) == 2
    assert msg in _one_error_line(capsys)
    assert not (tmp_path / "m").exists()


def test_a_patient_on_both_sides_of_the_split_is_refused(tmp_path, capsys):
    feats = _bags(tmp_path / "feats")
    rows = "s0,a,train,p0\ns1,b,train,p1\ns2,a,test,p0\ns3,b,test,p3\ns4,a,train,p4\ns5,b,train,p5\n"
    labels = _csv(tmp_path / "l.csv", "Slide,Label,Split,Patient\n" + rows)  # capitalised, as spreadsheets write
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(tmp_path / "m"),
                 *SMOKE]) == 2
    line = _one_error_line(capsys)
    assert "p0 has slides on both sides of the split" in line and "s0" in line and "s2" in line
    ok = _csv(tmp_path / "ok.csv", "slide,label,split,patient\n" + rows.replace("s2,a,test,p0", "s2,a,test,p2"))
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(ok), "--out", str(tmp_path / "m"),
                 *SMOKE]) == 0


def test_slide_cells_with_file_names_match_their_bags(tmp_path, capsys):
    from gensis.mil.train import load_cohort
    from gensis.wsi.dataset import match_label_rows

    feats = _bags(tmp_path / "feats")
    rows = "".join(f"{p}s{i}.svs,{'ab'[i % 2]}\n" for i, p in enumerate(["", "slides/", "", "C:\\scans\\", "", ""]))
    cohort = load_cohort(feats, _csv(tmp_path / "l.csv", "slide,label\n" + rows))
    assert cohort.slides == [f"s{i}" for i in range(6)]
    with pytest.raises(UserError, match=r"rows 's1' and 's1\.svs' name the same slide s1"):
        match_label_rows([{"slide": "s1", "label": "a"}, {"slide": "s1.svs", "label": "b"}], {"s1"}, "l.csv")
    matched, missing = match_label_rows([{"slide": "s9.svs", "label": "a"}, {"slide": "s1.txt", "label": "b"}],
                                        {"s1", "s1.txt"}, "l.csv")
    assert list(matched) == ["s1.txt"] and missing == ["s9.svs"]  # an exact id first; only slide extensions go


def test_predictions_csv_keeps_a_slide_name_with_a_comma_in_one_cell(tmp_path):
    import csv

    from gensis.mil.bags import write_bag

    feats = _bags(tmp_path / "feats", n=4)
    rng = np.random.default_rng(1)
    for name in ("case 7, left", 'case "8"'):
        write_bag(feats / f"{name}.h5", rng.normal(size=(3, 4)), np.zeros((3, 2)),
                  {"encoder": "runs/enc-A", "encoder_identity": "enc-A"})
    rows = "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(4)) + '"case 7, left",a\n"case ""8""",b\n'
    labels = _csv(tmp_path / "l.csv", "slide,label\n" + rows)
    run = tmp_path / "mil"
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(run), *SMOKE,
                 "cv.folds=2"]) == 0
    with open(run / "predictions.csv", newline="") as f:
        table = list(csv.reader(f))
    assert {len(r) for r in table} == {6} and {"case 7, left", 'case "8"'} <= {r[1] for r in table}
    assert main(["mil", "predict", "--run", str(run), "--feats", str(feats), "--no-heatmaps", "--out",
                 str(tmp_path / "p")]) == 0
    with open(tmp_path / "p" / "predictions.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["slide", "predicted", "p_a", "p_b"] and {len(r) for r in table} == {4}
    assert 'case "8"' in {r[0] for r in table}


def test_a_predict_stopped_while_drawing_heatmaps_is_rerun_into_its_out(tmp_path, capsys, monkeypatch):
    """`mil predict` drew every heatmap before writing predictions.csv, the file that marks its folder: killed
    (or stopped by an error) half-way through the heatmaps, its rerun was refused ("not a MIL predictions folder
    (holds heatmaps)") until the user deleted the folder."""
    from PIL import Image

    import gensis.mil.heatmap as hm
    from gensis.mil.bags import read_bag, write_bag

    feats = _bags(tmp_path / "feats")
    Image.new("RGB", (8, 8), "white").save(tmp_path / "thumb.png")
    for f in feats.glob("*.h5"):  # bags as `wsi embed` writes them: naming their slide's thumbnail
        b = read_bag(f)
        write_bag(f, b.features, b.coords, {**b.attrs, "thumbnail": str(tmp_path / "thumb.png"),
                                            "patch_size_level0": 4, "thumb_scale_x": 1.0, "thumb_scale_y": 1.0})
    labels = _csv(tmp_path / "l.csv", "slide,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(6)))
    run = tmp_path / "mil"
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(run), *SMOKE,
                 "cv.folds=2"]) == 0
    drawn = []

    def draw_then_die(path, *a, **k):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        drawn.append(path)
        if len(drawn) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(hm, "save_heatmap", draw_then_die)
    out = tmp_path / "pred"
    predict = ["mil", "predict", "--run", str(run), "--feats", str(feats), "--out", str(out)]
    assert main(predict) != 0 and len(drawn) == 2
    monkeypatch.setattr(hm, "save_heatmap", lambda path, *a, **k: path.write_bytes(b"png"))
    capsys.readouterr()
    assert main(predict) == 0, capsys.readouterr().err
    assert len(list((out / "heatmaps").glob("*.png"))) == 6


def test_text_with_a_non_utf8_file_name_is_written_as_its_bytes(tmp_path):
    import os

    from gensis.rundir import atomic_write_text

    name = os.fsdecode(b"caf\xe9")
    atomic_write_text(tmp_path / "p.csv", f"slide\n{name}\n")
    assert (tmp_path / "p.csv").read_bytes() == b"slide\ncaf\xe9\n"


def test_a_clam_dataset_csv_is_read_as_it_is(tmp_path):
    """CLAM's and Trident's cohort CSVs name their columns case_id, slide_id, label: they were refused ("needs
    columns 'slide' and 'label'"); slide_id is the slide and case_id the patient now."""
    from gensis.mil.train import load_cohort

    feats = _bags(tmp_path / "feats")
    rows = "".join(f"p{i // 2},s{i}.svs,{'ab'[i % 2]}\n" for i in range(6))
    cohort = load_cohort(feats, _csv(tmp_path / "clam.csv", "case_id,slide_id,label\n" + rows))
    assert cohort.slides == [f"s{i}" for i in range(6)]
    assert list(cohort.patients) == [f"patient:p{i // 2}" for i in range(6)]


@pytest.mark.parametrize("text,msg", [
    ("slide,label\n", "has the columns but no rows"),
    ("slide,label\n,\n\n", "has the columns but no rows"),
    ("", "needs columns 'slide' and 'label' (found: nothing)"),
    ("name,y\ns0,a\n", "needs columns 'slide' and 'label' (found: name, y)"),
])
def test_a_labels_csv_without_rows_says_so(tmp_path, capsys, text, msg):
    """A labels CSV holding only its header was refused as "needs columns 'slide' and 'label' (found: slide,
    label)": the columns it asked for. Now it says the rows are missing."""
    feats = _bags(tmp_path / "feats")
    labels = _csv(tmp_path / "l.csv", text)
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(tmp_path / "m"),
                 *SMOKE]) == 2
    assert msg in _one_error_line(capsys)


def test_val_rows_beside_test_rows_are_named_as_unused(tmp_path, capsys):
    """With train, val and test rows, the val rows were neither trained nor tested on, without a word."""
    from gensis.mil.train import load_cohort

    feats = _bags(tmp_path / "feats")
    rows = "s0,a,train\ns1,b,train\ns2,a,train\ns3,b,train\ns4,a,test\ns5,b,val\n"
    capsys.readouterr()
    load_cohort(feats, _csv(tmp_path / "l.csv", "slide,label,split\n" + rows))
    err = capsys.readouterr().err
    assert "1 val row(s)" in err and "s5" in err and "not used" in err, err
    load_cohort(feats, _csv(tmp_path / "l2.csv", "slide,label,split\n" + rows.replace("test", "val")))
    assert "not used" not in capsys.readouterr().err  # val rows are the test set when there are no test rows


def test_predict_slides_takes_file_names_as_mil_train_does(tmp_path, capsys):
    """`mil predict --slides A.svs` (or slides/A.svs) was "no bag for slide A.svs", though `mil train` matches the
    same cells of its labels CSV to their bags."""
    feats = _bags(tmp_path / "feats")
    labels = _csv(tmp_path / "l.csv", "slide,label\n" + "".join(f"s{i}.svs,{'ab'[i % 2]}\n" for i in range(6)))
    run = tmp_path / "mil"
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(run), *SMOKE,
                 "cv.folds=2"]) == 0
    predict = ["mil", "predict", "--run", str(run), "--no-heatmaps", "--quiet", "--feats", str(feats), "--out"]
    assert main([*predict, str(tmp_path / "p"), "--slides", "s1.svs,slides/s2.svs,s3"]) == 0
    csv = (tmp_path / "p" / "predictions.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in csv[1:]] == ["s1", "s2", "s3"]
    capsys.readouterr()
    assert main([*predict, str(tmp_path / "p2"), "--slides", "s9.svs"]) == 2
    assert "no bag for slide s9.svs" in _one_error_line(capsys)


def test_predict_rerun_adds_slides_and_another_run_is_refused(tmp_path, capsys):
    """A rerun of `mil predict` into its --out replaced predictions.csv with its own rows only: `--slides s1`
    dropped the other slides' rows (their heatmaps stayed), and another run's predictions replaced the first's
    without a word, leaving the heatmaps of the slides it did not predict from the first. Now the same run and
    features add to the table; another run (or other features) is one line, nothing changed."""
    feats = _bags(tmp_path / "feats")
    labels = _csv(tmp_path / "l.csv", "slide,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(6)))
    runs = [tmp_path / "mil", tmp_path / "mil2"]
    for run, seed in zip(runs, (0, 1)):
        assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(run), *SMOKE,
                     "cv.folds=2", f"cv.seed={seed}"]) == 0
    out = tmp_path / "p"
    predict = ["mil", "predict", "--no-heatmaps", "--quiet", "--feats", str(feats), "--out", str(out), "--run"]
    assert main([*predict, str(runs[0]), "--slides", "s0,s1,s2"]) == 0
    assert main([*predict, str(runs[0]), "--slides", "s3,s1"]) == 0
    rows = (out / "predictions.csv").read_text().splitlines()
    assert sorted(r.split(",")[0] for r in rows[1:]) == ["s0", "s1", "s2", "s3"]
    before = (out / "predictions.csv").read_bytes()
    capsys.readouterr()
    assert main([*predict, str(runs[1])]) == 2
    line = _one_error_line(capsys)
    assert "holds predictions of run" in line and str(runs[0]) in line and "another --out" in line
    assert (out / "predictions.csv").read_bytes() == before


def test_a_rerun_with_other_settings_says_which(tmp_path, capsys):
    """A rerun into a MIL run folder with an edited option or labels was refused as 'holds a MIL run with other
    settings or slides': which of them was not said. Now the keys with both values, or the slides."""
    feats = _bags(tmp_path / "feats")
    labels = _csv(tmp_path / "l.csv", "slide,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(6)))
    run = ["mil", "train", "--feats", str(feats), "--out", str(tmp_path / "m"), *SMOKE, "cv.folds=2"]
    assert main([*run, "--labels", str(labels)]) == 0
    capsys.readouterr()
    assert main([*run, "--labels", str(labels), "optim.lr=0.5"]) == 2
    line = _one_error_line(capsys)
    assert "optim.lr=" in line and "(now 0.5)" in line, line
    fewer = _csv(tmp_path / "l5.csv", "slide,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(5)))
    assert main([*run, "--labels", str(fewer)]) == 2
    assert "other slides in its splits" in _one_error_line(capsys)


def test_labels_that_differ_only_in_case_are_named(tmp_path, capsys):
    """'Benign' and 'benign' in one labels CSV were two classes without a word."""
    from gensis.mil.train import load_cohort

    feats = _bags(tmp_path / "feats")
    rows = "s0,Benign\ns1,tumour\ns2,benign\ns3,tumour\ns4,Benign\ns5,tumour\n"
    capsys.readouterr()
    cohort = load_cohort(feats, _csv(tmp_path / "l.csv", "slide,label\n" + rows))
    err = capsys.readouterr().err
    assert len(cohort.classes) == 3 and "'Benign' and 'benign'" in err and "differ only in case" in err, err
    load_cohort(feats, _csv(tmp_path / "ok.csv", "slide,label\n" + rows.replace("benign", "Benign")))
    assert "differ only" not in capsys.readouterr().err


def test_a_class_too_small_to_stratify_is_named(tmp_path, capsys):
    """'a class has fewer than 5 slides; folds are grouped but not stratified': which class was not said."""
    from gensis.mil.cv import kfold

    capsys.readouterr()
    kfold(np.array([0, 0, 0, 0, 1, 1]), np.arange(6), 5, seed=0, names=["benign", "tumour"])
    err = capsys.readouterr().err
    assert "class 'tumour' has 2 slide(s), fewer than the 5 folds" in err, err


def test_predict_without_the_thumbnails_says_what_to_do(tmp_path, capsys):
    """Bags whose tiles folder (with the thumbnails) moved since: 'thumbnail ... is missing (tiles folder moved?)',
    without the way out. Now it names --no-heatmaps (which predicts) and embedding again."""
    from gensis.mil.bags import read_bag, write_bag

    feats = _bags(tmp_path / "feats")
    for f in feats.glob("*.h5"):
        b = read_bag(f)
        write_bag(f, b.features, b.coords, {**b.attrs, "thumbnail": str(tmp_path / "gone" / "t.png"),
                                            "patch_size_level0": 4, "thumb_scale_x": 1.0, "thumb_scale_y": 1.0})
    labels = _csv(tmp_path / "l.csv", "slide,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(6)))
    run = tmp_path / "mil"
    assert main(["mil", "train", "--feats", str(feats), "--labels", str(labels), "--out", str(run), *SMOKE,
                 "cv.folds=2"]) == 0
    predict = ["mil", "predict", "--run", str(run), "--feats", str(feats), "--quiet", "--out"]
    capsys.readouterr()
    assert main([*predict, str(tmp_path / "p")]) == 2
    line = _one_error_line(capsys)
    assert "is missing" in line and "--no-heatmaps" in line, line
    assert main([*predict, str(tmp_path / "p"), "--no-heatmaps"]) == 0


def test_one_class_left_after_matching_bags_says_why(tmp_path, capsys):
    """A CSV with classes a and b whose b slides have no bag was refused as "every slide has the label 'a'",
    though the CSV holds b: now it says that no slide of 'b' has a bag."""
    from gensis.mil.train import load_cohort

    feats = _bags(tmp_path / "feats", n=3)
    rows = "s0,a\ns1,a\ns2,a\nx1,b\nx2,b\n"
    with pytest.raises(UserError, match=r"every slide with a bag in .* has the label 'a' \(no slide of 'b' has one\)"):
        load_cohort(feats, _csv(tmp_path / "l.csv", "slide,label\n" + rows))
    with pytest.raises(UserError, match=r"l1\.csv: every slide has the label 'a';"):
        load_cohort(feats, _csv(tmp_path / "l1.csv", "slide,label\ns0,a\ns1,a\ns2,a\n"))
