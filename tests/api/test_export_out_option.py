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


def test_safetensors_into_a_folder_is_new_or_empty_as_timm(encoder_run, tmp_path, capsys):
    """`gensis export RUN --to safetensors FOLDER` wrote FOLDER/model.safetensors into a folder of the user's that
    held other files (`--help` says new or empty); now it is refused in one line as `--to timm` refuses it, and
    the user's files stay as they were. A new or empty folder still gets FOLDER/model.safetensors."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["export", str(encoder_run), "--to", "safetensors", str(mine)]) == 2
    assert capsys.readouterr().err == f"gensis: error: {mine} already exists; choose another output folder or remove it\n"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(encoder_run), "--to", "safetensors", str(empty)]) == 0
    assert main(["export", str(encoder_run), "--to", "safetensors", str(tmp_path / "new")]) == 0
    assert [p.name for p in empty.iterdir()] == ["model.safetensors"] == [p.name for p in (tmp_path / "new").iterdir()]
    assert main(["export", str(encoder_run), "--to", "safetensors", str(empty)]) == 2  # a second export: refused


def test_safetensors_to_another_file_suffix_is_one_line(encoder_run, tmp_path, capsys):
    """`gensis export RUN --to safetensors x.bin` made a folder x.bin/ holding model.safetensors; now a name with
    another file suffix is one line before anything is written (a folder name with a dot: end it with /)."""
    assert main(["export", str(encoder_run), "--to", "safetensors", str(tmp_path / "x.bin")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gensis: error: {tmp_path / 'x.bin'} names a .bin file, but --to safetensors writes a "
                          f"safetensors file"), err
    assert not any(tmp_path.iterdir())
    assert main(["export", str(encoder_run), "--to", "safetensors", str(tmp_path / "v1.2") + "/"]) == 0
    assert (tmp_path / "v1.2" / "model.safetensors").is_file()
    assert main(["export", str(encoder_run), "--to", "safetensors", str(tmp_path / "E.SafeTensors")]) == 0
    assert (tmp_path / "E.SafeTensors").is_file()
