"""The public Python API of gensis (re-exported by ``import gensis``; guide: docs/api.md).

Every pipeline stage is a function taking objects: a dataset (an ``ImageSet``, a ``--data`` string, an image
array or any torch Dataset of images), a config (a typed ``PretrainConfig`` / ``ELDMConfig`` / ``BankConfig`` /
``MILConfig``, a dict from ``gensis.make_config(...)``, or a preset name plus overrides) and a ``Path``. Each
returns the run directory it wrote, the same folder the command line writes, so what the CLI does and what
Python does can be mixed freely. The command line is a thin layer over these functions: ``gensis pretrain``
calls ``pretrain``, ``--print-config`` prints ``pretrain_config(...)`` (``eldm_config``, ``bank_config``,
``mil_config``), and so on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import numpy as np

from gensis.configs.typed import CONFIGS, BankConfig, ELDMConfig, MILConfig, PretrainConfig
from gensis.configs.typed_base import StageConfig, nest_overrides, resolve
from gensis.errors import same_on_every_rank

if TYPE_CHECKING:
    import torch

    from gensis.bank.reader import BankReader
    from gensis.data.sources import ImageSet
    from gensis.eldm.model import ELDMGenerator
    from gensis.models.encoder import Encoder

Config = dict[str, Any]
PathLike = str | os.PathLike[str]
Overrides = Mapping[str, Any] | Sequence[str]
ConfigLike = StageConfig | Mapping[str, Any]
STAGES = tuple(CONFIGS)


# ---------------------------------------------------------------------------------------------------------
# configs


def _check_stage(stage: str) -> type[StageConfig]:
    if stage not in CONFIGS:
        from gensis.errors import UserError

        raise UserError(f"unknown stage '{stage}'; valid: {', '.join(STAGES)}")
    return CONFIGS[stage]


def make_config(stage: str, preset: str = "demo", overrides: Overrides | None = None) -> Config:
    """The resolved, validated config of ``stage`` (``pretrain``, ``eldm``, ``bank`` or ``mil``) as a plain
    dict: ``base.yaml`` → preset (``smoke``, ``demo``, ``small``, ``paper`` or a YAML file) → overrides
    (``{"optim.epochs": 2}`` or ``["optim.epochs=2"]``). The same schema check as the command line: unknown
    keys and bad values raise ``gensis.errors.UserError`` with one line. The typed equivalent:
    ``gensis.PretrainConfig.from_preset(preset, overrides)`` (``ELDMConfig``, ``BankConfig``, ``MILConfig``)."""
    _check_stage(stage)
    return resolve(stage, preset, overrides)


DEFAULT_PRESET = {"mil": "base"}  # the preset of a stage given neither config= nor preset= (else "demo")


def stage_config(stage: str, config: ConfigLike | None = None, preset: str | None = None,
                 overrides: Overrides | None = None) -> StageConfig:
    """The typed config a stage runs with: ``config`` (a typed config, a dict from ``make_config`` or a run's
    ``config.yaml``, a partial dict: missing keys take their defaults) or else ``preset`` (default: ``demo``,
    ``base`` for mil), then ``overrides``; validated (also values assigned to a typed config after it was made).
    Both ``config`` and ``preset``: a UserError (the preset would be ignored)."""
    cls = _check_stage(stage)
    if config is None:
        return cls.from_preset(preset or DEFAULT_PRESET.get(stage, "demo"), overrides)
    if preset is not None:
        from gensis.errors import UserError

        raise UserError(f"give config= or preset='{preset}', not both: a config is already resolved (change it "
                        f"with overrides=, or make it with {cls.__name__}.from_preset('{preset}', ...))")
    if isinstance(config, StageConfig):
        if config.family != stage:
            from gensis.errors import UserError

            raise UserError(f"a {type(config).__name__} was given where the {stage} stage needs a "
                            f"{cls.__name__}")
        given: Mapping[str, Any] = config.to_dict()
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        given = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        given = config
    else:
        from gensis.errors import UserError

        raise UserError(f"config must be a {cls.__name__} or a mapping (from gensis.make_config), "
                        f"got {type(config).__name__}")
    typed = cls.from_dict(given)
    return typed.with_overrides(overrides) if overrides else typed


def _sets(overrides: Overrides | None, key: str) -> bool:
    """Whether ``overrides`` set the top-level ``key``."""
    if not overrides:
        return False
    if isinstance(overrides, Mapping):
        return key in nest_overrides(overrides)
    return any(str(o).split("=", 1)[0].strip() == key for o in overrides)


def _override_value(overrides: Overrides | None, key: str) -> tuple[bool, Any]:
    """(whether ``overrides`` set the dotted ``key``, the value they set)."""
    from gensis.config import parse_overrides

    if not overrides:
        return False, None
    node: Any = (nest_overrides(overrides) if isinstance(overrides, Mapping)
                 else parse_overrides(str(o) for o in overrides))
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _agree(overrides: Overrides | None, key: str, value: str, flag: str) -> None:
    """A UserError when an option (``--method X``) and an override of its key (``method=Y``) disagree."""
    from gensis.errors import UserError

    given, other = _override_value(overrides, key)
    if given and str(other) != value:
        raise UserError(f"{flag} {value} and the override {key}={other} disagree: give one of them")


@same_on_every_rank()  # under torchrun a bad config is one line, from rank 0
def pretrain_config(config: PretrainConfig | Mapping[str, Any] | None = None, *, preset: str | None = None,
                    overrides: Overrides | None = None, method: str | None = None, interp: str | None = None,
                    bank: PathLike | None = None) -> PretrainConfig:
    """The config ``pretrain`` runs with (what ``gensis pretrain --print-config`` prints): ``config`` or
    ``preset``, then ``overrides``, then ``method`` (``--method``) and the disentanglement source
    (``interp``; ``bank`` when a bank is given). With a preset, ``method`` also selects the preset's
    ``per_method`` values (a ``config`` object is already resolved: its values stay)."""
    extra: dict[str, Any] = {}
    if method is not None:
        from gensis.ssl.methods import method_class

        method_class(method)  # an unknown name lists the valid ones
        _agree(overrides, "method", method, "--method")
        extra["method"] = method
    if interp is not None:
        _agree(overrides, "gen.interp", interp, "--interp")
    # a bank means its interpolations unless the overrides say otherwise (gen.interp=none: generative views only)
    mode = interp if interp is not None else (
        "bank" if bank is not None and not _override_value(overrides, "gen.interp")[0] else None)
    if mode is not None:
        extra["gen.interp"] = mode
    if config is None and extra:  # with the preset, so that the method's per_method values apply
        overrides = ({**overrides, **extra} if isinstance(overrides, Mapping)
                     else [*(overrides or ()), *(f"{k}={v}" for k, v in extra.items())])
        extra = {}
    cfg = stage_config("pretrain", config, preset, overrides)
    return cast(PretrainConfig, cfg.with_overrides(extra) if extra else cfg)


@same_on_every_rank()  # under torchrun a bad config is one line, from rank 0
def eldm_config(config: ELDMConfig | Mapping[str, Any] | None = None, *, preset: str | None = None,
                overrides: Overrides | None = None, autoencoder: PathLike | None = None) -> ELDMConfig:
    """The config ``train_eldm`` / ``train_autoencoder`` run with (``gensis eldm ... --print-config``): with
    an ``autoencoder`` the latent space is ``vq`` unless ``overrides`` set ``space``."""
    cfg = stage_config("eldm", config, preset, overrides)
    if autoencoder is not None and not _sets(overrides, "space") and cfg.to_dict()["space"] != "vq":
        cfg = cfg.with_overrides({"space": "vq"})
    return cast(ELDMConfig, cfg)


@same_on_every_rank()  # under torchrun a bad config is one line, from rank 0
def bank_config(config: BankConfig | Mapping[str, Any] | None = None, *, preset: str | None = None,
                overrides: Overrides | None = None) -> BankConfig:
    """The config ``generate_bank`` runs with (``gensis bank generate --print-config``)."""
    return cast(BankConfig, stage_config("bank", config, preset, overrides))


@same_on_every_rank()  # under torchrun a bad config is one line, from rank 0
def mil_config(config: MILConfig | Mapping[str, Any] | None = None, *, preset: str | None = None,
               overrides: Overrides | None = None) -> MILConfig:
    """The config ``train_mil`` runs with (``gensis mil train --print-config``)."""
    return cast(MILConfig, stage_config("mil", config, preset, overrides))


# ---------------------------------------------------------------------------------------------------------
# data


def as_image_set(data: Any, labels: Any = None) -> ImageSet:
    """An ``ImageSet`` from an ImageSet, a ``--data`` string or path (the whole source unless a split is named),
    a uint8 N×H×W(×3) array, a uint8 (N, 3, H, W) tensor or any map-style torch Dataset of images."""
    from gensis.data.torch_datasets import as_image_set as _as

    return _as(data, labels)


def _str(path: PathLike, what: str) -> str:
    """A path argument as a string, ``~`` expanded (as a shell would: ``"~/runs/dino"`` is not a folder named ``~``);
    anything else (``out=None``) is a UserError naming the argument ``what`` (was os.fspath's TypeError)."""
    if not isinstance(path, (str, os.PathLike)):
        from gensis.errors import UserError

        raise UserError(f"{what} must be a path (a str or os.PathLike), got {type(path).__name__}")
    return os.path.expanduser(os.fspath(path))


def _path(path: PathLike, what: str) -> Path:
    return Path(_str(path, what))


def _data_spec(data: Any) -> str:
    """What the stages' ``data`` argument takes: strings/paths as they are, objects registered in-process."""
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    from gensis.data.sources import register_data

    return register_data(as_image_set(data)) + "@all"


def _split_spec(data: Any, split: str | None) -> str:
    """A ``--data`` string as it is (the caller's split rules apply); an object registered in-process, whole
    (``split``: the split the caller reads, ``None`` when it reads several)."""
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    if split is None:
        from gensis.errors import UserError

        raise UserError("this evaluation reads a dataset's train and val splits: give a --data string or path")
    return _data_spec(data)


# ---------------------------------------------------------------------------------------------------------
# pipeline stages

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextlib.contextmanager
def _keeping_torch_settings() -> Iterator[None]:
    """torch's intra-op thread count, grad mode and default dtype as they were on entering."""
    import torch

    threads, grad, dtype = torch.get_num_threads(), torch.is_grad_enabled(), torch.get_default_dtype()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)


def _frees_its_folders(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """A stage call leaves the folders it locked free when it returns or raises, as a command does
    (``gensis.rundir.releasing_locks``): a KeyboardInterrupt or an error left the lock held until the Python
    process exited, and a ``gensis ... --resume`` from another process was refused. With ``quiet=True`` (the
    default of those that take it) no progress bar is shown at all, as with a command's ``--quiet``. The
    process is left as it was: torch's thread count (``train.threads`` set it), grad mode, default dtype and
    the global random generators (a stage seeds them), so a second call in a notebook runs as in a fresh
    process and the notebook's own seeding is kept."""
    quiet = inspect.signature(fn).parameters.get("quiet")
    quiet_default = bool(quiet.default) if quiet is not None else False

    @functools.wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        from gensis.progress import bars_off
        from gensis.rundir import releasing_locks
        from gensis.train.rng import keeping_global_rng

        # quiet=True: no bar at all, as --quiet (an E-LDM's embedding pass showed one)
        with releasing_locks(), bars_off(bool(kwargs.get("quiet", quiet_default))), keeping_global_rng(), \
                _keeping_torch_settings():
            return fn(*args, **kwargs)

    return call



@_frees_its_folders
def pretrain(data: Any, out: PathLike, *, preset: str | None = None, config: PretrainConfig | Mapping[str, Any] | None = None,
             overrides: Overrides | None = None, bank: PathLike | None = None, interp: str | None = None,
             method: str | None = None, resume: bool = False, quiet: bool = True) -> Path:
    """Self-supervised pretraining (DINO by default; the Gen- variant with ``bank``), as ``gensis pretrain``;
    returns the run directory.

    ``data``: a ``--data`` string (its train split is used) or an object (used whole). ``config``: a
    ``PretrainConfig`` (or dict); without one, ``preset``. ``overrides`` apply on top of either. ``interp``: the
    disentanglement source, ``bank`` (default with a bank), ``pixel`` or ``none``. ``method``: a registered
    SSL method (``gensis.ssl.methods.METHODS``: dino, dinov2, ibot, simclr, ...), as ``--method``; default: the
    config's ``method`` (dino). An unknown name is a ``UserError`` listing the valid ones.
    """
    from gensis.ssl.train import train

    cfg = pretrain_config(config, preset=preset, overrides=overrides, method=method, interp=interp, bank=bank)
    run = train(cfg.to_dict(), _data_spec(data), _path(out, "out"), resume=resume,
                bank_path=None if bank is None else _str(bank, "bank"), quiet=quiet)
    return Path(run.path)


@_frees_its_folders
def train_autoencoder(data: Any, out: PathLike, *, preset: str | None = None,
                      config: ELDMConfig | Mapping[str, Any] | None = None, overrides: Overrides | None = None,
                      resume: bool = False, quiet: bool = True) -> Path:
    """The E-LDM's VQ autoencoder (the ``ae`` section of an ``ELDMConfig``), as ``gensis eldm train-ae``;
    returns the run directory."""
    from gensis.eldm.train_ae import train_ae

    _warn(autoencoder_override_warning(overrides))
    cfg = eldm_config(config, preset=preset, overrides=overrides)
    return Path(train_ae(cfg.to_dict(), _data_spec(data), _path(out, "out"), resume=resume, quiet=quiet).path)


def _override_keys(overrides: Overrides | None) -> list[str]:
    """The keys ``overrides`` set: dotted for ``key=value`` strings, the top-level sections for a mapping."""
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        return [str(k) for k in nest_overrides(overrides)]
    return [str(o).split("=", 1)[0].strip() for o in overrides]


AUTOENCODER_SECTIONS = ("data", "ae", "train")  # what the autoencoder's training reads (gensis.eldm.train_ae)


def autoencoder_override_warning(overrides: Overrides | None) -> str | None:
    """The E-LDM's two commands share one config (one preset, the ``eldm`` family), so one list of overrides may
    serve both and each reads its part: ``train-ae`` the ``data``, ``ae`` and ``train`` sections. An ``optim.*``
    override is the one easily meant for the autoencoder (its own is ``ae.optim.*``, with the same names): given
    to ``train-ae`` it did nothing, silently. Returns the warning line's text for such keys (None: none), unless
    the list also sets keys only the E-LDM reads (``unet.*``, ``sample.*`` ...): then it is one list for both
    commands, and its ``optim.*`` is meant for ``eldm train``."""
    return _unread_override_warning(overrides, own=AUTOENCODER_SECTIONS + ("optim",), unread=("optim",),
                                    what="the E-LDM's setting (`gensis eldm train`), not read by the autoencoder's "
                                         "training; its own: {own}", rename=lambda k: "ae." + k)


def eldm_override_warning(overrides: Overrides | None) -> str | None:
    """The other half of ``autoencoder_override_warning``: ``ae.*`` given to ``eldm train`` did nothing, silently
    (the E-LDM uses the autoencoder of ``--ae``, trained before). Returns the warning line's text (None: none),
    unless the list also sets keys only the E-LDM reads: then it is one list for both commands."""
    return _unread_override_warning(overrides, own=AUTOENCODER_SECTIONS, unread=("ae",),
                                    what="the autoencoder's setting (`gensis eldm train-ae`), not read by `eldm "
                                         "train`, which uses the autoencoder given by --ae")


def _unread_override_warning(overrides: Overrides | None, *, own: tuple[str, ...], unread: tuple[str, ...],
                             what: str, rename: Callable[[str], str] = str) -> str | None:
    """A warning line for the keys of sections ``unread`` in a list setting only sections ``own`` (a list that
    also sets other sections is one list for both E-LDM commands: no warning)."""
    keys = list(dict.fromkeys(_override_keys(overrides)))
    if {k.split(".", 1)[0] for k in keys} - set(own):
        return None
    hits = [k for k in keys if k.split(".", 1)[0] in unread]
    if not hits:
        return None
    return f"{', '.join(hits)}: " + what.format(own=", ".join(rename(k) for k in hits))


def _warn(line: str | None) -> None:
    """Print a warning line on stderr (once, on the main rank)."""
    import sys

    from gensis.errors import on_main_rank

    if line and on_main_rank():
        print(f"gensis: warning: {line}", file=sys.stderr)


@_frees_its_folders
def train_eldm(encoder: PathLike, data: Any, out: PathLike, *, autoencoder: PathLike | None = None,
               preset: str | None = None, config: ELDMConfig | Mapping[str, Any] | None = None,
               overrides: Overrides | None = None, resume: bool = False, quiet: bool = True) -> Path:
    """The embedding-conditioned diffusion model, as ``gensis eldm train``; returns the run directory.

    ``encoder``: a pretraining run; ``autoencoder``: a ``train_autoencoder`` run (sets ``space=vq`` unless
    ``overrides`` set ``space``).
    """
    from gensis.eldm.train import train

    _warn(eldm_override_warning(overrides))
    cfg = eldm_config(config, preset=preset, overrides=overrides, autoencoder=autoencoder)
    ae_path = None if autoencoder is None else _str(autoencoder, "autoencoder")
    run = train(cfg.to_dict(), _str(encoder, "encoder"), _data_spec(data), _path(out, "out"), ae_path=ae_path, resume=resume,
                quiet=quiet)
    return Path(run.path)


@_frees_its_folders
def generate_bank(eldm: PathLike | None, data: Any, out: PathLike, *, generator: Any = None, preset: str | None = None,
                  config: BankConfig | Mapping[str, Any] | None = None, overrides: Overrides | None = None,
                  quiet: bool = True) -> Path:
    """The augmentation bank, as ``gensis bank generate``; returns the bank folder (rerun to finish a killed one).

    ``generator``: instead of an E-LDM run, any object implementing
    ``gensis.eldm.generator.EmbeddingConditionedGenerator`` (docs/api.md shows an adapter), or a
    ``"module:factory"`` string as ``--generator``.
    """
    from gensis.bank.generate import generate_bank as _generate

    cfg = bank_config(config, preset=preset, overrides=overrides)
    spec = generator if isinstance(generator, str) else None
    res = _generate(cfg.to_dict(), _data_spec(data), _path(out, "out"), eldm=None if eldm is None else _str(eldm, "eldm"),
                    generator=None if spec is not None else generator, generator_spec=spec, quiet=quiet)
    if not res.complete:
        from gensis.errors import UserError

        raise UserError(f"bank {out} is incomplete; call generate_bank again to finish it")
    return _path(out, "out")


@_frees_its_folders
def eldm_figures(eldm: PathLike, data: Any, out: PathLike, *, overrides: Overrides | None = None,
                 method: str | None = None, seed: int | None = None, guidance: float | None = None,
                 steps: int | None = None, sampler: str | None = None, device: str = "auto",
                 amp: str = "auto") -> list[Path]:
    """The E-LDM's PNG grids (generative, interpolation: paper Fig. 7-13), as ``gensis eldm sample``; returns
    the PNG paths. Settings: the run's ``figures`` section, then ``overrides`` (``{"figures.rows": 4}``)."""
    from gensis.eldm.figures import sample_run

    return sample_run(_str(eldm, "eldm"), _split_spec(data, "val"), _str(out, "out"), overrides=overrides, method=method, seed=seed,
                      guidance=guidance, steps=steps, sampler=sampler, device=device, amp=amp)


@_frees_its_folders
def evaluate_eldm(eldm: PathLike, data: Any, *, n: int | None = None, overrides: Overrides | None = None,
                  guidance: float | None = None, steps: int | None = None, sampler: str | None = None,
                  device: str = "auto", amp: str = "auto", quiet: bool = True) -> dict[str, Any]:
    """The E-LDM's fidelity numbers on held-out images (source retrieval, k-NN label agreement, Fréchet
    distance), as ``gensis eldm eval``; returns the JSON-ready result. ``data``: a ``--data`` string (its val
    split is held out, its train split is the k-NN bank)."""
    from gensis.eldm.evaluate import evaluate_run

    return evaluate_run(_str(eldm, "eldm"), _split_spec(data, None), n=n, overrides=overrides, guidance=guidance, steps=steps,
                        sampler=sampler, device=device, amp=amp, quiet=quiet)


@_frees_its_folders
def train_mil(feats: PathLike, labels: PathLike, out: PathLike, *, preset: str | None = None,
              config: MILConfig | Mapping[str, Any] | None = None, overrides: Overrides | None = None,
              quiet: bool = True) -> dict[str, Any]:
    """ABMIL slide classification on bags of tile embeddings (``gensis wsi embed``), cross-validated, as
    ``gensis mil train``; writes ``out`` (metrics.json, metrics.md, predictions.csv) and returns the metrics
    (``splits``, ``summary``, ``n_slides``, ``mode``)."""
    from gensis.mil.train import train_mil as _train

    cfg = mil_config(config, preset=preset, overrides=overrides)
    return _train(cfg.to_dict(), _str(feats, "feats"), _str(labels, "labels"), _str(out, "out"), quiet=quiet)


# ---------------------------------------------------------------------------------------------------------
# using what was trained


def load_encoder(run: PathLike, which: str = "teacher", device: str = "cpu") -> Encoder:
    """The frozen encoder of a pretraining run (``pixels``/``random``: the baselines). Call it on uint8
    (B, 3, H, W) images to get (B, D) CLS embeddings; ``.model`` is the timm ViT."""
    from gensis.device import pick_device
    from gensis.models.encoder import load_encoder as _load

    return _load(_str(run, "run"), which).to(pick_device(device))


@_frees_its_folders
def embed(encoder: Encoder | PathLike, images: Any, batch_size: int = 256, device: str = "cpu", *,
          quiet: bool = True) -> np.ndarray:
    """(N, D) float32 embeddings of images (anything ``as_image_set`` takes), in order. ``quiet=False``: the
    feature pass's progress bar."""
    from gensis.device import pick_device
    from gensis.models.encoder import Encoder as _Encoder
    from gensis.eval.features import extract_features

    enc = encoder if isinstance(encoder, _Encoder) else load_encoder(encoder)
    ds = as_image_set(images)
    if len(ds) == 0:  # (0, D), so that it stacks with other embeddings of this encoder
        return np.zeros((0, enc.dim), np.float32)
    return extract_features(enc, ds, batch_size, pick_device(device))


def load_generator(run: PathLike, device: str = "cpu", guidance: float | None = None, steps: int | None = None,
                   sampler: str | None = None, with_encoder: bool = True, amp: str = "auto") -> ELDMGenerator:
    """The E-LDM of a finished ``train_eldm`` run: ``.encode(images)``, ``.generate(embeddings, seeds)``,
    ``.interpolate(e1, e2, alpha, seeds=...)``. ``amp``: bf16 autocast, ``auto`` (CUDA, CPUs with AMX or
    AVX512-BF16), ``bf16`` or ``off``."""
    from gensis.eldm.model import load_generator as _load

    return _load(_path(run, "run"), device=device, guidance=guidance, steps=steps, sampler=sampler, amp=amp,
                 with_encoder=with_encoder)


def open_bank(path: PathLike) -> BankReader:
    """Random access to a bank's entries (``generative_batch``, ``interpolated_batch``, ``secondary``)."""
    from gensis.bank.reader import BankReader

    return BankReader(_path(path, "path"))


@_frees_its_folders
def knn(encoder: Encoder | PathLike, train: Any, test: Any, ks: Sequence[int] = (10, 20),
        temperature: float = 0.07, batch_size: int = 256, device: str = "cpu", *, quiet: bool = True) -> dict[str, Any]:
    """DINO's weighted k-NN accuracy (top-1/top-5 in %) of a frozen encoder, as ``gensis eval knn`` (same default
    ``ks``; DINO's paper also reports k = 100, 200: ``ks=[10, 20, 100, 200]``).

    ``train``/``test``: labelled images (anything ``as_image_set`` takes; the test labels are matched to train's
    classes by name where both name them, as on the command line; two ``--data`` strings are read as the command
    line reads ``--train``/``--test``: one source as its train and val splits unless a split is named). Returns the JSON-ready result
    (``top1``, ``top5``, ``k`` of the best k, ``results`` per k). ``quiet=False``: the progress bars."""
    from gensis.device import pick_device
    from gensis.eval.knn import knn_eval
    from gensis.models.encoder import Encoder as _Encoder

    enc = encoder if isinstance(encoder, _Encoder) else load_encoder(encoder)
    return knn_eval(enc, *_train_test(train, test), _numbers(ks, "ks"), temperature, pick_device(device), batch_size)


def _train_test(train: Any, test: Any) -> tuple[ImageSet, ImageSet]:
    """``(train, test)`` as ImageSets, the test labels matched to train's classes by name, as ``gensis eval``
    does (a test folder without one of train's classes, e.g. ``val/{b,c}`` against ``train/{a,b,c}``, would
    otherwise read its ``b`` as train's ``a``); a test class that train lacks is a UserError naming it."""
    from gensis.data.sources import match_classes

    if isinstance(train, (str, os.PathLike)) and isinstance(test, (str, os.PathLike)):
        from gensis.eval.common import open_train_test

        # as `gensis eval`: one source is read as its train and val splits (it was scored on itself, whole)
        return open_train_test(_str(train, "train"), _str(test, "test"))
    train_set = as_image_set(train)
    return train_set, match_classes(train_set, as_image_set(test))


def _numbers(values: Any, name: str) -> list[Any]:
    """``ks=20`` as ``[20]`` (was a TypeError from ``list(20)``), any sequence as a list."""
    if isinstance(values, (int, float, np.integer, np.floating)) and not isinstance(values, bool):
        return [values]
    if isinstance(values, (str, bytes)):  # list("10") is ['1', '0']: k = 0 and 1
        from gensis.errors import UserError

        raise UserError(f"{name} must be a number or a list of numbers, got {values!r}")
    try:
        return list(values)
    except TypeError:
        from gensis.errors import UserError

        raise UserError(f"{name} must be a number or a list of numbers, got {values!r}") from None


@_frees_its_folders
def linear(encoder: Encoder | PathLike, train: Any, test: Any, *, epochs: int = 100,
           lrs: Sequence[float] | None = None, aug_copies: int = 2, batch_size: int = 256,
           device: str = "cpu", seed: int = 0, crop_scale: tuple[float, float] = (0.08, 1.0),
           quiet: bool = True) -> dict[str, Any]:
    """DINO's linear probe (a learning-rate sweep of linear heads on frozen features), as ``gensis eval
    linear``; returns the JSON-ready result (``top1``, ``top5``, ``lr`` of the best head, ``results`` per lr).
    ``crop_scale``: the area range of the train crops (``--crop-scale``; ``(1, 1)``: whole images). ``batch_size``:
    images per forward pass of the encoder (``--feature-batch-size``), not the SGD batch of the heads (1024, as
    ``--batch-size``; every option: ``gensis.evaluate("linear", ...)``). ``quiet=False``: the progress bars."""
    from gensis.device import pick_device
    from gensis.eval.linear import DEFAULT_LRS, LinearConfig, linear_eval
    from gensis.models.encoder import Encoder as _Encoder

    enc = encoder if isinstance(encoder, _Encoder) else load_encoder(encoder)
    lrs = _numbers(lrs, "lrs") if lrs is not None else None
    scale = tuple(float(v) for v in _numbers(crop_scale, "crop_scale"))
    if len(scale) != 2:
        from gensis.errors import UserError

        raise UserError(f"crop_scale must be (min, max), got {crop_scale!r}")
    cfg = LinearConfig(lrs=tuple(lrs) if lrs else DEFAULT_LRS, epochs=epochs, aug_copies=aug_copies, seed=seed,
                       crop_scale=(scale[0], scale[1]))
    return linear_eval(enc, *_train_test(train, test), cfg, pick_device(device), batch_size)


@_frees_its_folders
def evaluate(protocol: str, **options: Any) -> dict[str, Any]:
    """Any registered evaluation, as ``gensis eval PROTOCOL`` (``knn``, ``linear``, ``robustness``,
    ``copydetect``, ``retrieval``, ``davis``, ``umap``, ``all``: ``gensis.eval.registry``), with its
    command-line options as keyword arguments, parsed by the same parser (same defaults and checks):
    ``gensis.evaluate("umap", encoder=[run, "pixels"], data="builtin:digits", out="map.png", per_class=20)``.
    Lists give several values (``k=[10, 20]``) or one comma-separated value (``encoder=[a, b]``); ``True``
    sets a flag; ``json="res.json"`` also writes the result. Returns the JSON-ready result, whose ``options`` are
    every option as parsed (defaults included: ``evaluate(protocol, **res["options"])`` runs it again). ``knn`` and
    ``linear`` also take objects: ``gensis.knn`` / ``gensis.linear``."""
    from gensis.eval.registry import run_evaluation

    return run_evaluation(protocol, **{k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in options.items()})


@_frees_its_folders
def export_model(run: PathLike, to: str, out: PathLike, which: str = "teacher") -> Path:
    """``gensis export``: ``to`` = ``timm`` (folder for ``timm.create_model("local-dir:OUT")``),
    ``safetensors`` (plain state_dict) or ``diffusers`` (an E-LDM run as diffusers folders)."""
    from gensis.export import export as _export

    return _export(_path(run, "run"), to, _path(out, "out"), which)


__all__ = ["BankConfig", "Config", "ELDMConfig", "MILConfig", "PretrainConfig", "StageConfig", "as_image_set",
           "bank_config", "eldm_config", "eldm_figures", "embed", "evaluate", "evaluate_eldm", "export_model", "generate_bank",
           "knn", "linear", "load_encoder", "load_generator", "make_config", "mil_config", "open_bank", "pretrain",
           "pretrain_config", "stage_config", "train_autoencoder", "train_eldm", "train_mil"]
