"""``gensis export RUN --to timm --out OUT`` works as every other command's ``--out`` does (it was "unrecognized
arguments: --out (did you mean --to?)"); the positional OUT still goes anywhere; OUT given twice, differently, or
not at all is one line."""

from gensis.cli.main import main


def test_out_as_an_option_or_positional(encoder_run, tmp_path, capsys):
    assert main(["export", str(encoder_run), "--to", "timm", "--out", str(tmp_path / "a")]) == 0
    assert main(["export", str(encoder_run), "--to", "timm", str(tmp_path / "b")]) == 0  # the documented form
    assert main(["export", str(encoder_run), str(tmp_path / "c"), "--to", "timm"]) == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert (tmp_path / "c" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["export", str(encoder_run), str(tmp_path / "d"), "--to", "timm", "--out", str(tmp_path / "e")]) == 2
    assert "two outputs given" in capsys.readouterr().err
    assert main(["export", str(encoder_run), "--to", "timm"]) == 2
    assert capsys.readouterr().err == "gensis: error: no output given: gensis export RUN --to FORMAT OUT (or --out OUT)\n"
    assert not any((tmp_path / n).exists() for n in "de")
