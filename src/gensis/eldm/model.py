"""The trained E-LDM as an ``EmbeddingConditionedGenerator``: embeddings in, images out.

    gen = load_generator("runs/eldm")                      # a finished `gensis eldm train` run
    e = gen.encode(images)                                 # uint8 (B,3,H,W) → (B, D)
    x = gen.generate(e, seeds=[0, 1, ...], guidance=6.0)   # → uint8 (B, 3, S, S)
    x = gen.interpolate(e1, e2, alpha=0.5, method="slerp", seeds=[...])

The same (embedding, seed, settings) gives the same image whatever batch it is in: the initial noise of
each row comes from its own generator (see ``ddim_sampler``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from gensis.device import autocast, pick_device, use_bf16
from gensis.eldm.autoencoder import PixelSpace, load_autoencoder, to_uint8
from gensis.eldm.ddim_sampler import SamplerSettings, initial_noise, make_sampler
from gensis.eldm.denoiser import Denoiser
from gensis.eldm.generator import INTERPOLATIONS
from gensis.eldm.schedule import NoiseSchedule
from gensis.errors import UserError
from gensis.rundir import described_by, load_tensors, read_json

if TYPE_CHECKING:
    from gensis.configs.typed import ELDMConfig
    from gensis.configs.typed_base import Overrides
    from gensis.models.encoder import Encoder


MICRO_BATCH = 32  # rows per denoiser call of ``load_generator``'s generator (the bank uses BANK_MICRO_BATCH)


def resolve_clip(clip: Any, space: str) -> float | None:
    if clip == "auto":
        return 1.0 if space == "pixel" else None
    if clip in (None, False, "off", "none"):
        return None
    return float(clip)


def sampler_number(value: Any, what: str, integer: bool = False) -> float:
    """``guidance`` / ``steps`` as passed from Python: a number (an integer for steps), else a UserError. A string
    was a ValueError traceback (a list a TypeError), and steps=2.5 ran 2 steps without a word."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.number))
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        raise UserError(f"{what} must be {'an integer' if integer else 'a number'}, got {value!r}")
    return int(value) if integer else float(value)


class ELDMGenerator:
    """Embedding-conditioned latent diffusion model (implements ``EmbeddingConditionedGenerator``)."""

    def __init__(self, denoiser: Denoiser, autoencoder: Any, schedule: NoiseSchedule, encoder: Encoder | None,
                 image_size: int,
                 latent_shape: tuple[int, int, int], defaults: SamplerSettings, weights_identity: str,
                 device: torch.device | str = "cpu", bf16: bool = False,
                 steps_by_sampler: dict[str, int] | None = None, micro_batch: int = 32):
        if int(micro_batch) < 1:
            raise UserError(f"micro_batch must be >= 1, got {micro_batch}")
        # channels-last convolutions: measured ~10% more UNet rows/s on CPU (docs/eldm.md)
        self.denoiser = denoiser.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.autoencoder = autoencoder
        self.schedule = schedule
        self.encoder = encoder
        self.image_size = int(image_size)
        self.latent_shape = tuple(latent_shape)  # (C, h, w)
        self.defaults = defaults.check()
        # steps used when a call names a sampler but no steps
        self.steps_by_sampler = {"ddim": 50, "dpmpp": 20, **(steps_by_sampler or {}), defaults.name: defaults.steps}
        self.device = torch.device(device)
        self.bf16 = bf16
        self.micro_batch = int(micro_batch)
        self._weights_identity = weights_identity

    # -- identity -------------------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """Hash of the weights, the autoencoder, the encoder, the default sampler settings, the micro-batch size
        and the precision: everything that can change a generated pixel."""
        d = self.defaults
        parts = [self._weights_identity, self.autoencoder.identity, self.encoder.identity if self.encoder else "-",
                 d.name, d.steps, d.guidance, d.eta, d.spacing, d.clip, self.micro_batch, self.bf16]
        return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]

    @property
    def embedding_dim(self) -> int:
        """D, the width of the embeddings the E-LDM is conditioned on (its encoder's output)."""
        linear = self.denoiser.conditioner.proj[1]  # LayerNorm(D) → Linear(D, ...) (the Conditioner in eldm.pipeline)
        assert isinstance(linear, torch.nn.Linear)
        return int(linear.in_features)

    @property
    def encoder_identity(self) -> str:
        return self.encoder.identity if self.encoder is not None else "-"

    # -- the protocol ----------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → float32 (B, D) on the CPU: the conditioning encoder's embedding."""
        if self.encoder is None:
            raise UserError("this generator was loaded without its encoder")
        out: torch.Tensor = self.encoder(images).float().cpu()
        return out

    def settings(self, guidance: float | None = None, steps: int | None = None, sampler: str | None = None,
                 eta: float | None = None) -> SamplerSettings:
        d = self.defaults
        name = sampler or d.name
        if steps is None:
            steps = self.steps_by_sampler.get(name, d.steps)
        return SamplerSettings(name, int(sampler_number(steps, "sampler steps", integer=True)),
                               sampler_number(d.guidance if guidance is None else guidance, "guidance"),
                               float(d.eta if eta is None else eta), d.spacing, d.clip).check()

    @torch.no_grad()
    def generate(self, embeddings: torch.Tensor, seeds: Sequence[int] | int, guidance: float | None = None,
                 steps: int | None = None, sampler: str | None = None, eta: float | None = None) -> torch.Tensor:
        """float (B, D) + one seed per row → uint8 (B, 3, S, S) on the CPU.

        ``seeds`` may be a single int s: rows then use s, s+1, ..., s+B−1. ``guidance``/``steps``/``sampler``
        default to the run's ``sample`` config (or what ``load_generator`` was given).
        """
        return to_uint8(self.generate_float(embeddings, seeds, guidance, steps, sampler, eta))

    @torch.no_grad()
    def generate_float(self, embeddings: torch.Tensor, seeds: Sequence[int] | int, guidance: float | None = None,
                       steps: int | None = None, sampler: str | None = None, eta: float | None = None
                       ) -> torch.Tensor:
        """As ``generate`` but returns float images in [−1, 1] (B, 3, S, S) on the CPU (before rounding)."""
        e = torch.as_tensor(embeddings).float()
        d = self.embedding_dim
        if e.ndim != 2 or e.shape[1] != d:  # another width was a RuntimeError from the conditioner's LayerNorm
            raise UserError(f"embeddings must be (B, {d}) (this E-LDM's encoder's dimension), got shape "
                            f"{tuple(e.shape)}")
        if not bool(torch.isfinite(e).all()):  # nan/inf rows sampled images of nothing, silently
            raise UserError("embeddings hold nan or inf values")
        seeds = [seeds + i for i in range(len(e))] if isinstance(seeds, int) else [int(s) for s in seeds]
        if len(seeds) != len(e):
            raise UserError(f"{len(e)} embeddings but {len(seeds)} seeds")
        s = self.settings(guidance, steps, sampler, eta)
        m = self.micro_batch
        outs = []
        for lo in range(0, len(e), m):
            outs.append(self._generate_chunk(e[lo:lo + m], seeds[lo:lo + m], s))
        if not outs:
            return torch.zeros((0, 3, self.image_size, self.image_size))
        return torch.cat(outs)

    def _generate_chunk(self, e: torch.Tensor, seeds: list[int], s: SamplerSettings) -> torch.Tensor:
        """Rows are run in micro-batches of exactly ``micro_batch`` (the last one padded with dummy rows):
        convolution kernels pick their arithmetic by batch size, so a fixed size keeps a row's image
        bit-identical whatever batch the caller put it in (rows never influence each other)."""
        dev = self.device
        b = len(e)
        if b < self.micro_batch:  # pad (B, D) and the seeds; the padding rows are thrown away
            e = torch.cat([e, torch.zeros(self.micro_batch - b, e.shape[1])])
            seeds = list(seeds) + [0] * (self.micro_batch - b)
        x_T, gens = initial_noise(seeds, self.latent_shape, dev)  # (B, C, h, w)
        x_T = x_T.contiguous(memory_format=torch.channels_last)
        sampler = make_sampler(self.schedule, s)
        with autocast(dev, self.bf16):
            ctx = self.denoiser.condition(e.to(dev))  # (B, Cc), or (B, T, Cc) with cond.tokens = T > 1
            z = sampler.sample(self._model, x_T, ctx.float(), self.denoiser.null_context.float(), s.guidance, gens)
            x: torch.Tensor = self.autoencoder.decode(z.float())
        return x.float().clamp(-1, 1).cpu()[:b]

    def _model(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.denoiser(x, t, c).float()
        return out

    # -- interpolation ---------------------------------------------------------------------------------
    def interpolate(self, e1: torch.Tensor, e2: torch.Tensor, alpha: float | torch.Tensor, method: str = "slerp",
                    seeds: Sequence[int] | int = 0, **kw: Any) -> torch.Tensor:
        """Generate from the interpolated embedding: ``slerp`` (default) or ``lerp`` = α·e1 + (1−α)·e2.

        α = 1 gives e1's generation, α = 0 e2's (with the same seeds). e1, e2: (B, D); α scalar or (B,).
        """
        if method not in INTERPOLATIONS:
            raise UserError(f"unknown interpolation '{method}'; valid: {', '.join(INTERPOLATIONS)}")
        e1, e2 = torch.as_tensor(e1).float(), torch.as_tensor(e2).float()
        if e1.shape != e2.shape:
            raise UserError(f"e1 and e2 must have the same shape (B, D), got {tuple(e1.shape)} and {tuple(e2.shape)}")
        a = torch.as_tensor(alpha, dtype=torch.float64)
        if not bool(torch.isfinite(a).all()) or bool((a < 0).any()) or bool((a > 1).any()):
            raise UserError(f"alpha must be in [0, 1] (1: e1's side, 0: e2's), got {a.tolist()}")
        e = INTERPOLATIONS[method](e1, e2, alpha)
        return self.generate(e, seeds, **kw)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path.parent} has no {path.name}: is it a finished `gensis eldm train` run?")
    return read_json(path, "E-LDM description")


def load_generator(eldm_run_dir: str | Path, device: str | torch.device = "cpu", guidance: float | None = None,
                   steps: int | None = None, sampler: str | None = None, amp: str = "auto",
                   with_encoder: bool = True, micro_batch: int = MICRO_BATCH) -> ELDMGenerator:
    """The E-LDM of a finished ``gensis eldm train`` run as an ``EmbeddingConditionedGenerator``.

    ``guidance``/``steps``/``sampler`` replace the run's ``sample`` defaults (and enter ``identity``), as does
    ``micro_batch`` (rows per denoiser call; a call with fewer rows is padded to it, see ``_generate_chunk``).
    """
    from gensis.eldm.train import EMA_WEIGHTS, MODEL_JSON, build_denoiser
    from gensis.models.encoder import load_encoder

    _require_eldm_run(eldm_run_dir)
    run = Path(eldm_run_dir)
    info = _read_json(run / MODEL_JSON)
    dev = pick_device(str(device))
    with described_by(run / MODEL_JSON, "E-LDM description"):  # what it says, read before anything is loaded
        den = build_denoiser(info, int(info["emb_dim"]), int(info["latent_channels"]), int(info["latent_size"]))
        pixel, ae_dir = info["space"] == "pixel", None if info["space"] == "pixel" else str(info["autoencoder"]["dir"])
        pixel_patch = int(info.get("pixel_patch", 1))
        enc_spec, enc_which, enc_identity = (str(info["encoder"][k]) for k in ("dir", "which", "identity"))
        smp = dict(info["sample"])
        sampler_defaults = (smp["sampler"], smp["steps"], smp["dpmpp_steps"], smp["guidance"], float(smp["eta"]),
                            smp["spacing"], resolve_clip(smp["clip"], info["space"]))
        schedule = NoiseSchedule.from_cfg(info["diffusion"])
        image_size, latent_channels, ls = int(info["image_size"]), int(info["latent_channels"]), int(info["latent_size"])
        weights_identity = str(info["weights_identity"])
        sampler_steps = {"ddim": int(smp["steps"]), "dpmpp": int(smp["dpmpp_steps"])}
    den.load_state_dict(load_tensors(run / EMA_WEIGHTS))
    den.to(dev)
    ae = PixelSpace(pixel_patch) if pixel else load_autoencoder(run / str(ae_dir), dev)
    encoder = None
    if with_encoder:
        enc_path = run / enc_spec if (run / enc_spec).is_dir() else Path(enc_spec)
        encoder = load_encoder(str(enc_path) if enc_path.exists() else enc_spec, enc_which).to(dev)
        if encoder.identity != enc_identity:
            raise UserError(f"{run}: the encoder at {enc_path} is not the one the E-LDM was trained with")
    default_name, ddim_steps, dpmpp_steps, default_guidance, eta, spacing, clip = sampler_defaults
    name = sampler or default_name
    if steps is None:
        steps = ddim_steps if name == "ddim" else dpmpp_steps
    defaults = SamplerSettings(name, int(sampler_number(steps, "sampler steps", integer=True)),
                               sampler_number(default_guidance if guidance is None else guidance, "guidance"),
                               eta, spacing, clip)
    return ELDMGenerator(den, ae, schedule, encoder, image_size, (latent_channels, ls, ls), defaults,
                         weights_identity, dev, use_bf16(dev, amp), sampler_steps, int(micro_batch))


def _require_eldm_run(path: str | Path) -> None:
    """A UserError when ``path`` is missing, a file, or a gensis folder of another kind (named as such)."""
    from gensis.folder_kind import require_kind

    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"E-LDM run {path} not found (no such folder): give the --out of a `gensis eldm train`")
    if not p.is_dir():
        raise UserError(f"{path} is a file, not an E-LDM run: give the --out folder of a `gensis eldm train`")
    require_kind(path, "eldm")


# what ``gensis eldm sample`` / ``eval`` read of a finished run's ``data`` section: how its held-out split is drawn
HELD_OUT_DATA_KEYS = ("data.val_fraction", "data.split_seed", "data.skip_bad_images")


def finished_run_config(eldm_run_dir: str | Path, overrides: Overrides | None = None,
                        reads: Sequence[str] | None = None, command: str = "this command") -> ELDMConfig:
    """The ``ELDMConfig`` of a finished ``gensis eldm train`` run (its ``config.yaml`` over ``base.yaml``), then
    ``overrides`` (``{"figures.rows": 4}`` or ``["eval.n=100"]``), validated; what ``sample``/``eval`` read.
    ``reads``: the keys or sections ``command`` reads; an override of any other key is a UserError (it would be
    accepted and change nothing: ``sample.guidance=6`` evaluated at the run's guidance)."""
    from gensis.configs.typed import ELDMConfig
    from gensis.rundir import RunDir

    _require_eldm_run(eldm_run_dir)  # a pretraining run, a bank, a typo: named as such, before its config is read
    run = RunDir(eldm_run_dir)
    if not run.is_done():
        unfinished = (run / "manifest.json").is_file()  # begun (the kind check above: an E-LDM run's manifest)
        raise UserError(f"{eldm_run_dir} is not a finished `gensis eldm train` run"
                        + (" (still training, or stopped: finish it with `gensis eldm train ... --resume`)" if unfinished else ""))
    cfg = ELDMConfig.from_dict(run.config(), where=f"{eldm_run_dir}/config.yaml")
    if not overrides:
        return cfg
    cfg = cfg.with_overrides(overrides)  # an unknown key or a bad value first, as everywhere
    if reads is not None:
        _refuse_unread(overrides, reads, command)
    return cfg


def _refuse_unread(overrides: Overrides, reads: Sequence[str], command: str) -> None:
    """A UserError naming the first override whose key is none of ``reads`` (keys, or sections: ``"eval"``)."""
    from gensis.config import flatten
    from gensis.configs.typed_base import overrides_delta

    unread = [k for k in flatten(overrides_delta(overrides)) if not any(k == r or k.startswith(r + ".") for r in reads)]
    if not unread:
        return
    key = unread[0]
    other = {"eval": "gensis eldm eval", "figures": "gensis eldm sample"}.get(key.split(".")[0])
    if key.startswith("sample."):
        why = ("the run's sampler settings apply: give --guidance, --steps or --sampler (guidance=, steps=, sampler= "
               "from Python)")
    else:
        why = f"it is read by `{other}`" if other else "a setting of the trained run: its training fixed it"
    can = ", ".join(f"{r}.*" if "." not in r else r for r in reads)
    raise UserError(f"{command} does not read {key} ({why}); its overrides: {can}")
