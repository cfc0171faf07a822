"""`gensis demo --out=-dd --data=-t.npz`: the demo ran its side-lane stages (and printed every stage's command to
run by hand) as `gensis pretrain --data -t.npz --out -dd/pixel ...`, which gensis refuses ('argument --data:
expected one argument'): the pixel stage failed. Such a value is now joined to its option (`--data=-t.npz`)."""

from __future__ import annotations

from gensis.cli.main import as_written, build_parser


def test_a_value_starting_with_a_dash_is_joined_to_its_option():
    argv = ["pretrain", "--data", "-t.npz", "--out", "-dd/pixel", "--preset", "smoke", "--interp", "pixel",
            "--quiet", "--resume", "train.seed=0"]
    written = as_written(argv)
    assert written == ["pretrain", "--data=-t.npz", "--out=-dd/pixel", "--preset", "smoke", "--interp", "pixel",
                       "--quiet", "--resume", "train.seed=0"]
    args, extra = build_parser().parse_known_args(written)
    assert (args.data, args.out, args.quiet, args.resume, args.overrides) == (
        "-t.npz", "-dd/pixel", True, True, ["train.seed=0"]) and not extra
    plain = ["bank", "generate", "--eldm", "d/eldm", "--data", "x.npz", "--out", "d/bank", "--quiet"]
    assert as_written(plain) == plain  # other commands are printed and run as before


def test_a_positional_path_starting_with_a_dash_is_read_as_a_path():
    """`gensis wsi demo --slide=-scan.svs` printed (and ran) its tiles stage as `gensis wsi tile -scan.svs ...`."""
    written = as_written(["wsi", "tile", "-scan.svs", "--out", "-w/tiles", "--mag", "20", "--quiet"])
    assert written == ["wsi", "tile", "./-scan.svs", "--out=-w/tiles", "--mag", "20", "--quiet"]
    args, extra = build_parser().parse_known_args(written)
    assert args.slides == ["./-scan.svs"] and args.out == "-w/tiles" and not extra


def test_a_tilde_after_an_equals_sign_is_the_home_folder(tmp_path, monkeypatch, capsys):
    """`--json=~/knn.json` (the shell expands ~ only at a word's start) wrote ./~/knn.json, a folder named '~' in the
    working folder, while its checks looked at the home folder; now ~ is the home folder, as in `--json ~/knn.json`."""
    import numpy as np

    from gensis.cli.main import main

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8), labels=np.arange(20) % 2)
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(tmp_path / "d.npz"), "--k", "1", "--quiet",
                 "--cache", "none", "--json=~/knn.json"]) == 0, capsys.readouterr().err
    assert (home / "knn.json").is_file() and not (work / "~").exists()
