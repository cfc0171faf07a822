"""`gensis wsi tile|embed|export` on bad options: one line, exit 2, no traceback, nothing written."""

from __future__ import annotations

import pytest

pytest.importorskip("openslide")
pytest.importorskip("h5py")

from wsi_slides import make_svs, slide_image  # noqa: E402

from gensis.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("wsi-inputs")
    slide = make_svs(d / "s.svs", slide_image(512, 384, [(64, 64, 320, 256)]), mpp=0.5, downsamples=(1, 2), tile=128)
    assert main(["wsi", "tile", str(slide), "--out", str(d / "T"), "--mag", "10", "--tile-size", "32",
                 "--quiet"]) == 0
    return d, slide


def _one_line(capsys, *words):
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("gensis: error:") and "Traceback" not in err[0], err
    for w in words:
        assert w in err[0], err[0]


def test_bad_numbers_are_one_line(tiled, tmp_path, capsys):
    """--mpp nan was a ValueError traceback; --thumb-size 0 a ZeroDivisionError named as the slide's failure;
    wsi embed --batch-size 0 / --workers -1 torch's ValueError tracebacks; tile --workers 0 was accepted."""
    d, slide = tiled
    capsys.readouterr()
    tile = ["wsi", "tile", str(slide), "--out", str(tmp_path / "T"), "--quiet"]
    for opt, val, words in [("--mpp", "nan", ("--mpp", "positive")), ("--mpp", "inf", ("--mpp",)),
                            ("--mag", "nan", ("--mag",)), ("--slide-mpp", "nan", ("--slide-mpp",)),
                            ("--thumb-size", "0", ("--thumb-size", ">= 1")), ("--thumb-size", "-5", ("--thumb-size",)),
                            ("--workers", "0", ("--workers", ">= 1"))]:
        assert main([*tile, opt, val]) == 2, (opt, val)
        _one_line(capsys, *words)
    assert not (tmp_path / "T").exists()
    embed = ["wsi", "embed", "--encoder", "pixels", "--tiles", str(d / "T"), "--out", str(tmp_path / "F"), "--quiet",
             "--device", "cpu"]
    for opt, val in [("--batch-size", "0"), ("--batch-size", "-2"), ("--workers", "-1")]:
        assert main([*embed, opt, val]) == 2, (opt, val)
        _one_line(capsys, opt)
    assert not (tmp_path / "F").exists()


def test_out_that_is_a_file_is_one_line(tiled, tmp_path, capsys):
    """--out naming a file: NotADirectoryError / FileExistsError tracebacks from mkdir; now one line naming it,
    exit 2, the file untouched."""
    d, slide = tiled
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    capsys.readouterr()
    for argv in (["wsi", "tile", str(slide), "--out", str(f), "--quiet"],
                 ["wsi", "embed", "--encoder", "pixels", "--tiles", str(d / "T"), "--out", str(f), "--quiet",
                  "--device", "cpu", "--workers", "0"],
                 ["wsi", "export", "--tiles", str(d / "T"), "--out", str(f), "--quiet"],
                 ["wsi", "export", "--tiles", str(d / "T"), "--out", str(f / "sub"), "--quiet"]):
        assert main(argv) == 2, argv
        _one_line(capsys, str(f), "cannot make the folder")
    assert f.read_text() == "keep me"


def test_mpp_csv_and_slide_lists_that_are_not_text_are_one_line(tiled, tmp_path, capsys):
    """--mpp-csv or a slide list (.txt/.csv) that is not UTF-8 text was a UnicodeDecodeError traceback; a slide
    given two mpp values took the last silently; a short row of a slide list CSV was an AttributeError."""
    d, slide = tiled
    binary = b"\xff\xfe\x00\x01PK\x03\x04"
    cases = []
    for name, text, argv_tail, words in [
            ("m.csv", binary, lambda p: [str(slide), "--mpp-csv", str(p)], ("m.csv", "not a UTF-8 text file")),
            ("two.csv", b"slide,mpp\ns,0.5\ns,0.25\n", lambda p: [str(slide), "--mpp-csv", str(p)],
             ("two.csv:3", "listed again")),
            ("list.txt", binary, lambda p: [str(p)], ("list.txt", "not a UTF-8 text file")),
            ("list.csv", binary, lambda p: [str(p)], ("list.csv", "not a UTF-8 text file"))]:
        p = tmp_path / name
        p.write_bytes(text)
        cases.append((p, argv_tail(p), words))
    capsys.readouterr()
    for p, tail, words in cases:
        assert main(["wsi", "tile", *tail, "--out", str(tmp_path / "T"), "--quiet"]) == 2, p
        _one_line(capsys, *words)
    assert not (tmp_path / "T").exists()
    lst = tmp_path / "slides.csv"  # Excel's CSV UTF-8 (BOM), a short row
    lst.write_bytes(f"\ufeffslide,note\n{slide},first\n\n{slide}\n".encode())
    assert main(["wsi", "tile", str(lst), "--out", str(tmp_path / "T"), "--mag", "10", "--tile-size", "32",
                 "--quiet"]) == 0
