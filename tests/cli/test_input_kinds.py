"""An input named by an option that exists as the other kind (a folder where a CSV or YAML file goes, a file where
a folder goes) was called "not found" though it is there; now one line saying what it is (exit 2)."""

from __future__ import annotations

import pytest

from gensis.cli.main import main


@pytest.mark.parametrize("argv, words", [
    (["mil", "train", "--feats", "{file}", "--labels", "{file}", "--out", "{tmp}/m"],
     "features folder {file} is a file"),
    (["wsi", "tile", "{file}", "--out", "{tmp}/t", "--mpp-csv", "{dir}"], "mpp CSV {dir} is a folder"),
    (["wsi", "export", "--tiles", "{file}", "--out", "{tmp}/png"], "tiles folder {file} is a file"),
    (["pretrain", "--out", "{tmp}/r", "--preset", "{dir}.yaml"], "config file {dir}.yaml is a folder"),
    (["eval", "all", "--encoder", "pixels", "--config", "{dir}"], "config {dir} is a folder"),
])
def test_an_input_of_the_other_kind_is_named_as_such(tmp_path, capsys, argv, words):
    d = tmp_path / "given"
    d.mkdir()
    (tmp_path / "given.yaml").mkdir()
    f = tmp_path / "file.csv"
    f.write_text("slide,label\n")
    fill = {"dir": str(d), "file": str(f), "tmp": str(tmp_path)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and words.format(**fill) in err[0] and "not found" not in err[0], err


def test_a_labels_csv_that_is_a_folder(tmp_path):
    from gensis.errors import UserError
    from gensis.wsi.dataset import read_label_rows

    with pytest.raises(UserError, match="labels CSV .* is a folder, not a file"):
        read_label_rows(tmp_path)
    with pytest.raises(UserError, match="labels CSV not found"):
        read_label_rows(tmp_path / "missing.csv")


def test_report_of_a_missing_folder_or_a_file_says_so(tmp_path, capsys):
    """`gensis report DEMO` with DEMO mistyped said 'DEMO is not a folder made by `gensis demo`'."""
    (tmp_path / "f").write_text("x")
    for path, words in ((tmp_path / "typo", "demo folder not found"), (tmp_path / "f", "is a file, not a folder")):
        assert main(["report", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("gensis: error:") and words in err, err
