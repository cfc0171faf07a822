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
