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


def test_a_folder_export_to_a_safetensors_name_is_one_line(encoder_run, vq_eldm_run, tmp_path, capsys):
    """`gensis export RUN --to timm vit.safetensors` made a folder named vit.safetensors (the user meant the one-file
    --to safetensors); now one line says a timm (or diffusers) export is a folder, before anything is written."""
    assert main(["export", str(encoder_run), "--to", "timm", str(tmp_path / "vit.safetensors")]) == 2
    assert capsys.readouterr().err == (f"gensis: error: {tmp_path / 'vit.safetensors'} names a .safetensors file, but "
                                       f"a timm export is a folder (config.json + model.safetensors): name a folder, "
                                       f"or use --to safetensors for the state_dict as one file\n")
    assert main(["export", str(vq_eldm_run), "--to", "diffusers", str(tmp_path / "e.SafeTensors")]) == 2
    assert "a diffusers export is a folder" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert main(["export", str(encoder_run), "--to", "safetensors", str(tmp_path / "vit.safetensors")]) == 0
    assert (tmp_path / "vit.safetensors").is_file()
