"""`gensis --help` and every `gensis VERB [SUBVERB] --help` start without importing torch or timm."""

import json
import os
import subprocess
import sys

PROBE = r"""
import argparse, contextlib, io, json, sys
from gensis.cli.main import build_parser, main

def paths(parser, prefix=()):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from paths(sub, prefix + (name,))

seen, codes = [], {}
for path in list(paths(build_parser())):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*path, "--help"])
        except SystemExit as e:
            codes[" ".join(path)] = e.code
    seen.append([" ".join(path), len(out.getvalue())])
heavy = sorted(m for m in ("torch", "timm", "torchvision", "diffusers", "faiss") if m in sys.modules)
print(json.dumps({"heavy": heavy, "seen": seen, "codes": codes}))
"""


def test_help_of_every_command_imports_no_torch():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    commands = {name for name, _ in res["seen"]}
    assert {"", "pretrain", "eval", "eval knn", "eval linear", "eldm", "bank", "demo", "export"} <= commands
    assert all(n > 100 for _, n in res["seen"]), res["seen"]  # each printed its help
    assert set(res["codes"].values()) == {0}, res["codes"]
    assert res["heavy"] == [], f"--help imported {res['heavy']}"


def test_the_probe_can_fail():
    """The same check sees torch once a command really runs (here: building a backbone)."""
    code = "import sys; from gensis.models.backbone import build_backbone; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "True", r.stderr


def test_python_dash_m_gensis_is_the_command():
    """`python -m gensis` runs the CLI (it was "No module named gensis.__main__"), under the name `gensis`."""
    r = subprocess.run([sys.executable, "-m", "gensis", "eval", "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: gensis eval"), r.stdout[:200]
    r = subprocess.run([sys.executable, "-m", "gensis", "pretrain", "--data"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "usage: gensis pretrain" in r.stderr, r.stderr
