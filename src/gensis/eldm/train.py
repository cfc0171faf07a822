"""``gensis eldm train``: the embedding-conditioned latent diffusion model (E-LDM) denoiser.

One training step, top to bottom (``training_step``):

    idx (B,)  ──▶ x_0 = latents[idx] (VQ-f4, cached once) or the images in [−1, 1] (pixel space)
                  [random horizontal flip per sample]
              ──▶ e = embeddings[idx]       frozen encoder's CLS, computed once and cached (encoder hash)
    drop ~ Bernoulli(p)                     condition → learned null embedding (classifier-free guidance)
    t ~ U{0..T−1}, ε ~ N(0, I), x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε
    loss = ‖ model(x_t, t, e, drop) − target ‖²     target: ε (or v)    [optional Min-SNR-γ weights]
    backward → clip → AdamW (lr: linear warm-up, then constant) → EMA of the weights

The run directory holds, as pretraining: ``config.yaml``, ``manifest.json``, ``metrics.jsonl``,
``checkpoint.safetensors`` (full state incl. RNGs, rewritten atomically every epoch, ``--resume``), and at
the end ``denoiser_ema.safetensors`` + ``eldm.json`` (everything needed to rebuild the generator), a copy
of the conditioning encoder (``encoder/``) and of the autoencoder (``autoencoder/``) so that the run is
self-contained, and ``cache/`` with the embeddings (and latents) of the training set.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from torch import nn

from gensis.configs.whole import check_whole
from gensis.data.loader import ImageBatches, check_training_batch, epoch_indices
from gensis.data.sources import ImageSet, cache_key, open_data
from gensis.device import autocast
from gensis.distributed import barrier
from gensis.eldm.autoencoder import AE_CONFIG, AE_WEIGHTS, PixelSpace, load_autoencoder, to_model_space, to_uint8
from gensis.eldm.denoiser import Denoiser, count_parameters
from gensis.eldm.schedule import NoiseSchedule
from gensis.errors import UserError, same_on_every_rank
from gensis.progress import progress
from gensis.rundir import (CACHE_DIR, RunDir, atomic_copy, atomic_write_json, file_hash, load_tensors, make_folder,
                           safetensors_name, save_tensors)
from gensis.train.foreach import ema_lerp
from gensis.train.loop import Runtime, Task, claim_and_build, fit

CHECKPOINT = "checkpoint.safetensors"
EMA_WEIGHTS = "denoiser_ema.safetensors"
MODEL_JSON = "eldm.json"
ENCODER_DIR = "encoder"
AE_DIR = "autoencoder"


class EMA:
    """Exponential moving average of a module's weights; decay_t = min(decay, (1 + t)/(10 + t)) with warm-up."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup = float(decay), bool(warmup)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, skip: torch.Tensor | None = None) -> float:
        """One EMA step; ``skip`` (a 0-dim device flag, ``FiniteGuard.skip``) leaves the weights as they are
        when set (the buffers are copied from ``model``, which the guard restores)."""
        d = self.decay_at(step)
        if not hasattr(self, "_pairs"):  # fixed lists of (ema, model) tensors, built once
            self._pairs = (list(self.model.parameters()), [p.detach() for p in model.parameters()],
                           list(self.model.buffers()), list(model.buffers()))
        ema_p, src_p, ema_b, src_b = self._pairs
        ema_lerp(ema_p, src_p, 1 - d, skip)
        if ema_b:
            torch._foreach_copy_(ema_b, src_b)
        return d


def build_denoiser(cfg: dict, emb_dim: int, channels: int, latent_size: int) -> Denoiser:
    """The denoiser of an E-LDM config (or of a run's ``eldm.json``: runs older than ``cond.tokens`` have 1)."""
    return Denoiser(emb_dim, channels, latent_size, cfg["unet"], int(cfg["unet"]["context_dim"]), cfg["cond"]["mode"],
                    int(cfg["cond"].get("tokens", 1)))


def lr_at(cfg: dict, step: int) -> float:
    """Linear warm-up to ``optim.lr`` over ``optim.warmup_steps``, then constant (LDM's LambdaLinearScheduler)."""
    o = cfg["optim"]
    w = int(o["warmup_steps"])
    return float(o["lr"]) * (min(1.0, (step + 1) / w) if w > 0 else 1.0)


def open_training_data(cfg: dict, data: str, split: str = "train") -> ImageSet:
    d = cfg["data"]
    return open_data(data, split, d["val_fraction"], d["split_seed"], d["limit"] if split == "train" else None,
                     d.get("skip_bad_images", False))


# ---------------------------------------------------------------------------------------------------------
# caches: computed once per (encoder or autoencoder, dataset), reused on --resume and by sample/eval


def _matches(path: Path, key: dict) -> bool:
    from safetensors import safe_open

    try:
        with safetensors_name(path) as name, safe_open(name, framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # unreadable: recompute
        return False
    return all(meta.get(k) == str(v) for k, v in key.items())


def _cached(path: Path, key: dict, compute, pattern: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors cached at ``path`` (or any file of the folder matching ``pattern``) with the same ``key``."""
    candidates = [path] + (sorted(path.parent.glob(pattern)) if pattern and path.parent.is_dir() else [])
    for p in candidates:
        if p.is_file() and _matches(p, key):
            return load_tensors(p)
    tensors = compute()
    save_tensors(path, tensors, key)
    return tensors


def cached_embeddings(folder: Path, encoder, ds: ImageSet, device, batch_size: int, tag: str = "train") -> torch.Tensor:
    """(N, D) float32 embeddings of ``ds`` by ``encoder``, cached under ``folder`` with both identities."""
    from gensis.eval.features import extract_features

    # view: non-square images are centre-cropped, not stretched (since 2026-12; older caches are recomputed)
    key = {"encoder": encoder.identity, "data": cache_key(ds), "view": "crop"}

    def compute():
        return {"embeddings": torch.from_numpy(extract_features(encoder, ds, batch_size, device, f"embed {tag}"))}

    return _cached(folder / f"embeddings-{tag}.safetensors", key, compute, "embeddings-*.safetensors")["embeddings"]


@torch.no_grad()
def cached_latents(folder: Path, ae, ds: ImageSet, size: int, device, batch_size: int, flip: bool,
                   bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents (N, C, S/f, S/f) of ``ds`` (and of its mirrored images), cached with the autoencoder's hash."""
    key = {"autoencoder": ae.identity, "data": cache_key(ds), "size": size, "flip": flip}

    def compute():
        lat, lat_f = [], []
        batches = ImageBatches(ds, batch_size, shuffle=False, drop_last=False, load_size=size)
        for images, _ in progress(batches.epoch(0), total=len(batches), desc="encode latents", leave=False):
            x = to_model_space(images, device)
            lat.append(ae.encode(x).float().cpu())
            if flip:
                lat_f.append(ae.encode(x.flip(-1)).float().cpu())
        out = {"latents": torch.cat(lat)}
        if flip:
            out["latents_flipped"] = torch.cat(lat_f)
        return out

    t = _cached(folder / "latents-train.safetensors", key, compute)
    return t["latents"], t.get("latents_flipped")


# ---------------------------------------------------------------------------------------------------------
# one step


def training_step(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, emb: torch.Tensor,
                  drop_prob: float, gen: torch.Generator, device, bf16: bool,
                  min_snr_gamma: float | None = None) -> torch.Tensor:
    """Diffusion loss of one batch; every random draw comes from ``gen`` (saved in checkpoints)."""
    b = x0.shape[0]
    drop = (torch.rand(b, generator=gen) < drop_prob).to(device)  # (B,) condition → ∅
    t = torch.randint(0, schedule.timesteps, (b,), generator=gen).to(device)  # (B,)
    noise = torch.randn(x0.shape, generator=gen).to(device)  # (B, C, H, W)
    x_t = schedule.add_noise(x0, noise, t)
    target = schedule.target(x0, noise, t)
    with autocast(device, bf16):
        pred = model(x_t, t, emb=emb, drop=drop)
    per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))  # (B,)
    if min_snr_gamma:
        snr = schedule.snr(t)
        w = snr.clamp(max=min_snr_gamma) / (snr if schedule.prediction == "epsilon" else snr + 1)
        per_sample = per_sample * w
    return per_sample.mean()


def _flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


# ---------------------------------------------------------------------------------------------------------
# the loop


def resolve_autoencoder(cfg: dict, ae_path: str | None, device):
    """The denoiser's space from ``space`` and ``--ae``: VQ latents (needs a train-ae run) or pixels."""
    if ae_path is not None:
        if cfg["space"] == "pixel":
            raise UserError("--ae was given but space=pixel; drop --ae or set space=vq")
        return load_autoencoder(ae_path, device)
    if cfg["space"] == "vq":
        raise UserError("space=vq needs --ae AE_RUN (train one with `gensis eldm train-ae`), or use space=pixel")
    if cfg["space"] != "pixel":
        raise UserError(f"space must be vq or pixel, got '{cfg['space']}'")
    return PixelSpace(int(cfg["pixel_patch"]))


def run_inputs(data: str, ds: ImageSet, encoder_spec: str, encoder, ae_path: str | None, ae) -> dict:
    """The inputs an E-LDM run records in its manifest (and ``--resume`` compares)."""
    return {"data": data, "data_identity": ds.identity, "data_layout": ds.layout, "encoder": str(encoder_spec),
            "encoder_identity": encoder.identity, "autoencoder": str(ae_path) if ae_path else "pixel",
            "autoencoder_identity": ae.identity}


def check_finished_resume(run: RunDir, cfg: dict, encoder_spec: str, data: str, ae_path: str | None) -> None:
    """``--resume`` on a finished run has nothing to train, but other settings or inputs are refused as on any
    ``--resume`` (``--resume optim.epochs=16`` to train longer said 'E-LDM training done' and trained nothing)."""
    from gensis.configs.added import added_keys
    from gensis.models.encoder import load_encoder
    from gensis.train.resume import check_resume

    ds = open_training_data(cfg, data)
    encoder = load_encoder(encoder_spec, cfg["cond"]["which"])
    ae = resolve_autoencoder(cfg, ae_path, "cpu")
    check_resume(run, ELDMTask.stage, cfg, run_inputs(data, ds, encoder_spec, encoder, ae_path, ae),
                 ELDMTask.resume_ignore, added_keys(ELDMTask.family))


class ELDMTask(Task):
    """E-LDM denoiser training as a loop ``Task`` (the step is ``training_step``)."""

    stage, desc = "eldm", "eldm train"
    resume_ignore = ("ae", "figures", "eval")  # sections `eldm train` does not read
    family = "eldm"  # resume_added: gensis.configs.added.ADDED["eldm"] (cond.tokens: 1)

    def __init__(self, cfg: dict, encoder_spec: str, data: str, run: RunDir, rt: Runtime, ae_path: str | None):
        from gensis.models.encoder import check_encoder_run, load_encoder

        o = cfg["optim"]
        self.cfg, self.rt, self.encoder_spec, self.ae_path = cfg, rt, encoder_spec, ae_path
        world, rank, seed, device = rt.dist.world, rt.dist.rank, rt.seed, rt.device
        if run.is_done():
            raise UserError(f"{run.path} already holds a finished {run.manifest().get('stage')} run; use another --out")
        size = int(cfg["data"]["image_size"])
        check_whole("eldm", cfg)  # the rules combining keys, before any data is read (as --print-config)
        check_encoder_run(encoder_spec, cfg["cond"]["which"])  # a wrong --encoder is refused before reading data
        ds = open_training_data(cfg, data)
        check_training_batch(len(ds), o["batch_size"], world, cfg["data"].get("limit"))
        self.encoder = encoder = load_encoder(encoder_spec, cfg["cond"]["which"]).to(device)
        self.ae = ae = resolve_autoencoder(cfg, ae_path, device)
        if ae.factor > 1 and size % ae.factor:
            raise UserError(f"data.image_size={size} is not divisible by the autoencoder's factor {ae.factor}")
        if ae.space == "vq" and getattr(ae, "image_size", size) != size and rt.is_main:
            print(f"[gensis] note: autoencoder trained at {ae.image_size} px, denoiser data.image_size={size}",
                  file=sys.stderr)
        self.latent_size = size // ae.factor

        # caches (rank 0 computes, the others read)
        cache = run / CACHE_DIR  # (written before the manifest: its files are what rundir.is_own_cache recognises)
        use_lat = ae.space == "vq" or ae.factor > 1  # VQ latents, or pixels folded into channels: encoded once
        flip = bool(cfg["data"]["hflip"])
        for turn in ("main", "others"):
            if rt.is_main == (turn == "main"):
                make_folder(cache)
                emb = cached_embeddings(cache, encoder, ds, device, int(cfg["cond"]["encode_batch_size"]))
                lat = cached_latents(cache, ae, ds, size, device, 256, flip) if use_lat else None
            if turn == "main":
                barrier()
        self.emb, self.lat = emb.to(device), lat
        self.loader = None
        if lat is None:
            self.loader = ImageBatches(ds, o["batch_size"], seed, rank, world, size, cfg["data"]["num_workers"])
        self.n, self.batch_size = len(ds), int(o["batch_size"])
        self.set_budget(o, len(ds) // o["batch_size"])  # epochs: more on a small set (optim.min_updates)
        self.log_every = int(cfg["train"]["log_every"])

        self.schedule_ = NoiseSchedule.from_cfg(cfg["diffusion"])
        torch.manual_seed(seed)  # the same initial weights whatever ran before
        self.model = build_denoiser(cfg, encoder.dim, ae.channels, self.latent_size).to(device)
        rt.seed_ranks()
        self.ema = EMA(self.model, cfg["ema"]["decay"], cfg["ema"]["warmup"])
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr_at(cfg, 0),
                                           weight_decay=float(o["weight_decay"]), fused=rt.fused_optim)
        self.clip_mode, self.clip_value = "global", o["clip_grad"]
        self.gen = torch.Generator().manual_seed(seed * 1000 + rank)  # flips, drops, t, ε
        self.inputs = run_inputs(data, ds, encoder_spec, encoder, ae_path, ae)

    def start_message(self) -> str:
        return (f"[gensis] E-LDM: {self.ae.space} space {self.ae.channels}x{self.latent_size}x{self.latent_size}, "
                f"denoiser {count_parameters(self.model) / 1e6:.2f}M parameters, cond {self.cfg['cond']['mode']}"
                f"{'' if self.model.tokens == 1 else f' ({self.model.tokens} tokens)'}, "
                f"{self.niter} steps/epoch")

    def batches(self, epoch: int):
        if self.loader is not None:
            for images, idx in self.loader.epoch(epoch):
                yield to_model_space(images, self.rt.device), idx
            return
        d = self.rt.dist
        for idx in epoch_indices(self.n, self.batch_size, epoch, self.rt.seed, d.rank, d.world):
            yield None, torch.from_numpy(idx)

    def batch_images(self, batch) -> int:
        return len(batch[1])

    def schedule(self, it: int, epoch: int) -> dict[str, float]:
        lr = lr_at(self.cfg, it)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return {"lr": lr}

    def step(self, model: nn.Module, batch, it: int, epoch: int):
        x0, idx = batch
        flip = torch.rand(len(idx), generator=self.gen) < 0.5  # drawn even when flips are off: same RNG stream
        flip_on = bool(self.cfg["data"]["hflip"])
        if x0 is None:  # cached latents (and those of the mirrored images)
            x0 = self.lat[0][idx]
            if flip_on:
                x0 = torch.where(flip.view(-1, 1, 1, 1), self.lat[1][idx], x0)
            x0 = x0.to(self.rt.device)
        elif flip_on:
            x0 = _flip(x0, flip.to(self.rt.device))
        loss = training_step(model, self.schedule_, x0, self.emb[idx.to(self.emb.device)],
                             float(self.cfg["cond"]["drop_prob"]), self.gen, self.rt.device, self.rt.bf16,
                             self.cfg["diffusion"]["min_snr_gamma"])
        return loss, {}

    def after_update(self, it: int, epoch: int) -> dict:
        return {"ema_decay": self.ema.update(self.model, it, self.guard.skip if self.guard else None)}

    def state_modules(self) -> dict[str, nn.Module]:
        return {"denoiser": self.model, "ema": self.ema.model}

    def generators(self) -> dict:
        return {"eldm": self.gen}

    @torch.no_grad()
    def sample_images(self, epoch: int, n: int = 8) -> dict[str, torch.Tensor]:
        """A grid of the EMA model's images for the first ``n`` training embeddings (seeds 0..n−1, the run's
        ``sample`` settings, DDIM): what the loop shows in TensorBoard after each epoch."""
        from torchvision.utils import make_grid

        from gensis.eldm.ddim_sampler import SamplerSettings, initial_noise, make_sampler
        from gensis.eldm.model import resolve_clip

        smp, den, dev = self.cfg["sample"], self.ema.model, self.rt.device
        n = min(n, self.n)
        s = SamplerSettings("ddim", int(smp["steps"]), float(smp["guidance"]), 0.0, smp["spacing"],
                            resolve_clip(smp["clip"], self.ae.space)).check()
        was_training = den.training
        den.eval()
        x_T, gens = initial_noise(list(range(n)), (self.ae.channels, self.latent_size, self.latent_size), dev)
        ctx = den.condition(self.emb[:n].float().to(dev))  # (n, C) or (n, T, C)
        z = make_sampler(self.schedule_, s).sample(lambda x, t, c: den(x, t, c).float(), x_T, ctx,
                                                   den.null_context.float(), s.guidance, gens)
        den.train(was_training)
        images = to_uint8(self.ae.decode(z.float()).clamp(-1, 1))  # (n, 3, S, S) uint8
        return {"samples": make_grid(images, nrow=n, padding=1)}

    def export(self, run: RunDir) -> dict:
        export(run, self.cfg, self.ema.model, self.encoder_spec, self.encoder, self.ae, self.ae_path,
               self.latent_size)
        return {}


def train(cfg: dict, encoder_spec: str, data: str, out: str | Path, ae_path: str | None = None, resume: bool = False,
          quiet: bool = False) -> RunDir:
    """Run (or resume) E-LDM denoiser training; returns the run directory."""
    rt = Runtime.setup(cfg["train"])
    run = RunDir(out)
    if resume and run.is_done():  # a finished run resumed: nothing to train, if its settings are these
        with same_on_every_rank():
            check_finished_resume(run, cfg, encoder_spec, data, ae_path)
        return run
    task = claim_and_build(run, rt, resume, ELDMTask, cfg, encoder_spec, data, run, rt, ae_path)
    return fit(task, rt, run, resume=resume, quiet=quiet)


def export(run: RunDir, cfg: dict, ema_model: Denoiser, encoder_spec: str, encoder, ae, ae_path: str | None,
           latent_size: int) -> None:
    """Final, self-contained generator: EMA weights + eldm.json + copies of the encoder and autoencoder."""
    enc_dir = run / ENCODER_DIR
    src = Path(encoder_spec)
    if src.is_dir():
        make_folder(enc_dir)
        which = cfg["cond"]["which"]
        for name in (f"{which}_backbone.safetensors", "config.yaml", "manifest.json"):
            atomic_copy(src / name, enc_dir / name)
    if ae_path is not None:
        make_folder(run / AE_DIR)
        for name in (AE_WEIGHTS, AE_CONFIG):
            atomic_copy(Path(ae_path) / name, run / AE_DIR / name)
    save_tensors(run / EMA_WEIGHTS, ema_model.state_dict())
    atomic_write_json(run / MODEL_JSON, {
        "space": ae.space, "pixel_patch": int(cfg["pixel_patch"]), "image_size": int(cfg["data"]["image_size"]), "latent_size": latent_size,
        "latent_channels": ae.channels, "emb_dim": encoder.dim,
        "encoder": {"dir": ENCODER_DIR if src.is_dir() else str(encoder_spec), "which": cfg["cond"]["which"],
                    "identity": encoder.identity},
        "autoencoder": {"dir": AE_DIR if ae_path is not None else None, "identity": ae.identity},
        "unet": cfg["unet"], "cond": cfg["cond"], "diffusion": cfg["diffusion"], "sample": cfg["sample"],
        "weights_identity": file_hash(run / EMA_WEIGHTS),
    })
