"""Dotted overrides that did nothing, or were refused with a misleading line, found by a new user's audit."""

import pytest

from gensis.cli.main import main


def _err(capsys) -> str:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == "" and len(lines) == 1 and lines[0].startswith("gensis: error: "), (out, err)
    return lines[0]


@pytest.mark.parametrize("argv,section,method", [
    (["--method", "dino", "ibot.out_dim=10"], "ibot", "dino"),
    (["dinov2.koleo_loss_weight=1"], "dinov2", "dino"),  # the preset's method
    (["method=ibot", "dino.out_dim=10"], "dino", "ibot"),
])
def test_another_methods_key_is_refused(argv, section, method, tmp_path, capsys):
    """`gensis pretrain --method dino ibot.out_dim=10` printed and ran with exit 0, the key ignored (dino reads only
    dino.*); now one line naming the method and --method to give."""
    assert main(["pretrain", "--out", str(tmp_path / "o"), "--preset", "smoke", *argv, "--print-config"]) == 2
    line = _err(capsys)
    assert f"the method is {method}, which reads no {section}.* key" in line and f"--method {section}" in line, line
    assert main(["pretrain", "--out", str(tmp_path / "o"), "--preset", "smoke", "--method", section,
                 *[a for a in argv if "=" in a and not a.startswith("method=")], "--print-config"]) == 0
