"""What the pipelines' stages call: the library (``gensis.api``) with typed config objects.

Each function returns ``call(resume)`` for a ``gensis.pipeline.runner.Stage`` (the demo) or the slide demo's
stages (``gensis.wsi.demo``); the call runs the stage in this process and prints the line the matching
``gensis`` command prints when it finishes (the stage's equivalent command line is printed before it starts).
Errors are ``UserError``s of the library; the runners name the stage in them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from gensis.configs.typed import BankConfig, ELDMConfig, PretrainConfig
from gensis.errors import UserError

StageCall = Callable[[bool], None]


def pretrain(config: PretrainConfig, data: str, out: Path, bank: Path | None = None,
             interp: str | None = None) -> StageCall:
    """``gensis.api.pretrain`` (``gensis pretrain``) with ``config``: Gen- with ``bank``, ablation with
    ``interp="pixel"``."""
    def call(resume: bool) -> None:
        from gensis.api import pretrain as _pretrain

        run = _pretrain(data, out, config=config, bank=bank, interp=interp, resume=resume, quiet=False)
        print(f"pretraining done: {run}")
    return call


def autoencoder(config: ELDMConfig, data: str, out: Path) -> StageCall:
    """``gensis.api.train_autoencoder`` (``gensis eldm train-ae``)."""
    def call(resume: bool) -> None:
        from gensis.api import train_autoencoder
        from gensis.rundir import RunDir

        run = train_autoencoder(data, out, config=config, resume=resume, quiet=False)
        val = RunDir(run).manifest().get("val", {})
        print(f"autoencoder done: {run} (held-out MSE {val.get('val_mse', float('nan')):.5f}, "
              f"PSNR {val.get('val_psnr', float('nan')):.2f} dB)")
    return call


def eldm(config: ELDMConfig, encoder: Path, data: str, out: Path, ae: Path | None) -> StageCall:
    """``gensis.api.train_eldm`` (``gensis eldm train``), on the autoencoder ``ae`` when latent."""
    def call(resume: bool) -> None:
        from gensis.api import train_eldm

        run = train_eldm(encoder, data, out, autoencoder=ae, config=config, resume=resume, quiet=False)
        print(f"E-LDM training done: {run}")
    return call


def bank(config: BankConfig, eldm_run: Path, data: str, out: Path, quiet: bool) -> StageCall:
    """``gensis.bank.generate.generate_bank`` (``gensis bank generate``; not ``gensis.api``'s, so that the
    result's summary is printed). A bank always continues where it stopped: complete shards are kept."""
    def call(resume: bool) -> None:
        from gensis.bank.generate import generate_bank

        result = generate_bank(config.to_dict(), data, out, eldm=str(eldm_run), quiet=quiet)
        print(result.summary())
        if not result.complete:
            raise UserError(f"bank {out} is incomplete")
    return call


def eldm_figures(eldm_run: Path, data: str, out: Path, overrides: Sequence[str] = ()) -> StageCall:
    """``gensis.api.eldm_figures`` (``gensis eldm sample``): the PNG grids; ``overrides``: figures.* key=value."""
    def call(resume: bool) -> None:
        from gensis.api import eldm_figures as _figures

        for p in _figures(eldm_run, data, out, overrides=list(overrides) or None):
            print(p)
    return call


def eldm_eval(eldm_run: Path, data: str, json_path: Path, overrides: Sequence[str] = ()) -> StageCall:
    """``gensis.api.evaluate_eldm`` (``gensis eldm eval --json``): fidelity numbers, printed and saved;
    ``overrides``: eval.* key=value."""
    def call(resume: bool) -> None:
        from gensis.api import evaluate_eldm
        from gensis.eldm.evaluate import format_report
        from gensis.rundir import atomic_write_json

        r = evaluate_eldm(eldm_run, data, overrides=list(overrides) or None, quiet=False)
        print(format_report(r))
        atomic_write_json(json_path, r)
    return call
