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
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from gensis.checkpoint import load_checkpoint, load_optimizer, save_checkpoint, sub_state
from gensis.data.loader import ImageBatches, epoch_indices
from gensis.data.sources import ImageSet, open_data
from gensis.device import autocast
from gensis.distributed import barrier, cleanup, setup_training
from gensis.eldm.autoencoder import AE_CONFIG, AE_WEIGHTS, PixelSpace, load_autoencoder, to_model_space
from gensis.eldm.denoiser import Denoiser, count_parameters
from gensis.eldm.schedule import NoiseSchedule
from gensis.errors import UserError
from gensis.progress import progress
from gensis.rundir import MetricsLog, RunDir, atomic_write_json, file_hash, load_tensors, save_tensors

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
    def update(self, model: nn.Module, step: int) -> float:
        d = self.decay_at(step)
        for pe, pm in zip(self.model.parameters(), model.parameters()):
            pe.lerp_(pm.detach(), 1 - d)
        for be, bm in zip(self.model.buffers(), model.buffers()):
            be.copy_(bm)
        return d


def build_denoiser(cfg: dict, emb_dim: int, channels: int, latent_size: int) -> Denoiser:
    return Denoiser(emb_dim, channels, latent_size, cfg["unet"], int(cfg["unet"]["context_dim"]), cfg["cond"]["mode"])


def lr_at(cfg: dict, step: int) -> float:
    """Linear warm-up to ``optim.lr`` over ``optim.warmup_steps``, then constant (LDM's LambdaLinearScheduler)."""
    o = cfg["optim"]
    w = int(o["warmup_steps"])
    return float(o["lr"]) * (min(1.0, (step + 1) / w) if w > 0 else 1.0)


def open_training_data(cfg: dict, data: str, split: str = "train") -> ImageSet:
    d = cfg["data"]
    return open_data(data, split, d["val_fraction"], d["split_seed"], d["limit"] if split == "train" else None)


# ---------------------------------------------------------------------------------------------------------
# caches: computed once per (encoder or autoencoder, dataset), reused on --resume and by sample/eval


def _matches(path: Path, key: dict) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
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

    key = {"encoder": encoder.identity, "data": ds.identity}

    def compute():
        return {"embeddings": torch.from_numpy(extract_features(encoder, ds, batch_size, device, f"embed {tag}"))}

    return _cached(folder / f"embeddings-{tag}.safetensors", key, compute, "embeddings-*.safetensors")["embeddings"]


@torch.no_grad()
def cached_latents(folder: Path, ae, ds: ImageSet, size: int, device, batch_size: int, flip: bool,
                   bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents (N, C, S/f, S/f) of ``ds`` (and of its mirrored images), cached with the autoencoder's hash."""
    key = {"autoencoder": ae.identity, "data": ds.identity, "size": size, "flip": flip}

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


def _gather_rng(gen: torch.Generator, dist_info) -> dict[str, torch.Tensor]:
    if not dist_info.enabled:
        return {"rng_rank0": gen.get_state()}
    import torch.distributed as dist

    states: list = [None] * dist_info.world
    dist.all_gather_object(states, gen.get_state())
    return {f"rng_rank{r}": s for r, s in enumerate(states)}


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


def train(cfg: dict, encoder_spec: str, data: str, out: str | Path, ae_path: str | None = None, resume: bool = False,
          quiet: bool = False) -> RunDir:
    """Run (or resume) E-LDM denoiser training; returns the run directory."""
    from gensis.models.encoder import load_encoder

    t_cfg, o = cfg["train"], cfg["optim"]
    device, dist_info, bf16, seed = setup_training(t_cfg)
    torch.manual_seed(seed)
    run = RunDir(out)
    if run.is_done() and not resume:
        raise UserError(f"{out} already holds a finished {run.manifest().get('stage')} run; use another --out")

    size = int(cfg["data"]["image_size"])
    ds = open_training_data(cfg, data)
    if o["batch_size"] % dist_info.world:
        raise UserError(f"optim.batch_size={o['batch_size']} must be divisible by the {dist_info.world} processes")
    if len(ds) < o["batch_size"]:
        raise UserError(f"dataset has {len(ds)} training images, fewer than optim.batch_size={o['batch_size']}")
    encoder = load_encoder(encoder_spec, cfg["cond"]["which"]).to(device)
    ae = resolve_autoencoder(cfg, ae_path, device)
    if ae.factor > 1 and size % ae.factor:
        raise UserError(f"data.image_size={size} is not divisible by the autoencoder's factor {ae.factor}")
    if ae.space == "vq" and getattr(ae, "image_size", size) != size:
        print(f"[gensis] note: autoencoder trained at {ae.image_size} px, denoiser data.image_size={size}",
              file=sys.stderr)
    latent_size = size // ae.factor

    # caches (rank 0 computes, the others read)
    cache = run / "cache"
    use_lat = ae.space == "vq" or ae.factor > 1  # VQ latents, or pixels folded into channels: encoded once
    if dist_info.is_main:
        cache.mkdir(parents=True, exist_ok=True)
        emb = cached_embeddings(cache, encoder, ds, device, int(cfg["cond"]["encode_batch_size"]))
        lat = cached_latents(cache, ae, ds, size, device, 256, bool(cfg["data"]["hflip"])) if use_lat else None
    barrier()
    if not dist_info.is_main:
        emb = cached_embeddings(cache, encoder, ds, device, int(cfg["cond"]["encode_batch_size"]))
        lat = cached_latents(cache, ae, ds, size, device, 256, bool(cfg["data"]["hflip"])) if use_lat else None
    emb = emb.to(device)
    batches = None
    if lat is None:
        batches = ImageBatches(ds, o["batch_size"], seed, dist_info.rank, dist_info.world, size,
                               cfg["data"]["num_workers"])
    niter = len(ds) // o["batch_size"]

    schedule = NoiseSchedule.from_cfg(cfg["diffusion"])
    torch.manual_seed(seed)  # the same initial weights whatever ran before
    denoiser = build_denoiser(cfg, encoder.dim, ae.channels, latent_size).to(device)
    ema = EMA(denoiser, cfg["ema"]["decay"], cfg["ema"]["warmup"])
    opt = torch.optim.AdamW(denoiser.parameters(), lr=lr_at(cfg, 0), weight_decay=float(o["weight_decay"]))
    gen = torch.Generator().manual_seed(seed * 1000 + dist_info.rank)  # flips, drops, t, ε

    start_epoch = 0
    if resume and (run / CHECKPOINT).is_file():
        tensors, info = load_checkpoint(run / CHECKPOINT)
        denoiser.load_state_dict(sub_state(tensors, "denoiser"))
        ema.model.load_state_dict(sub_state(tensors, "ema"))
        load_optimizer(opt, tensors, "optim.adamw", info["param_groups"]["adamw"])
        key = f"extra.rng_rank{dist_info.rank}"
        if key not in tensors:
            raise UserError(f"{out}: checkpoint was written by {info['meta'].get('world', 1)} process(es); "
                            f"resume with the same number")
        gen.set_state(tensors[key])
        start_epoch = info["meta"]["epoch"] + 1
    elif resume and dist_info.is_main and not quiet:
        print(f"[gensis] no checkpoint in {out}: starting from scratch", file=sys.stderr)
    inputs = {"data": data, "data_identity": ds.identity, "encoder": str(encoder_spec),
              "encoder_identity": encoder.identity, "autoencoder": str(ae_path) if ae_path else "pixel",
              "autoencoder_identity": ae.identity}
    if dist_info.is_main:
        run.start("eldm", cfg, seed, inputs, resume=resume)
    barrier()
    metrics = MetricsLog(run / "metrics.jsonl", keep_until_step=start_epoch * niter if resume else None) \
        if dist_info.is_main else None
    if dist_info.is_main and not quiet and start_epoch == 0:
        print(f"[gensis] E-LDM: {ae.space} space {ae.channels}x{latent_size}x{latent_size}, denoiser "
              f"{count_parameters(denoiser) / 1e6:.2f}M parameters, cond {cfg['cond']['mode']}, "
              f"{niter} steps/epoch", file=sys.stderr)

    model = DDP(denoiser) if dist_info.enabled else denoiser
    flip_on = bool(cfg["data"]["hflip"])
    total = o["epochs"] * niter
    bar = progress(total=total, initial=start_epoch * niter, disable=not dist_info.is_main or quiet,
                   desc="eldm train", unit="it")
    t_start = time.time()
    for epoch in range(start_epoch, o["epochs"]):
        t0, n_img = time.time(), 0
        if batches is not None:
            it_epoch = ((to_model_space(images, device), idx) for images, idx in batches.epoch(epoch))
        else:
            it_epoch = ((None, torch.from_numpy(idx)) for idx in
                        epoch_indices(len(ds), o["batch_size"], epoch, seed, dist_info.rank, dist_info.world))
        for i, (x0, idx) in enumerate(it_epoch):
            step = epoch * niter + i
            flip = torch.rand(len(idx), generator=gen) < 0.5  # drawn even when flips are off: same RNG stream
            if x0 is None:  # cached latents (and those of the mirrored images)
                x0 = lat[0][idx]
                if flip_on:
                    x0 = torch.where(flip.view(-1, 1, 1, 1), lat[1][idx], x0)
                x0 = x0.to(device)
            elif flip_on:
                x0 = _flip(x0, flip.to(device))
            lr = lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = training_step(model, schedule, x0, emb[idx.to(emb.device)], float(cfg["cond"]["drop_prob"]),
                                 gen, device, bf16, cfg["diffusion"]["min_snr_gamma"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = None
            if o["clip_grad"]:
                gnorm = float(torch.nn.utils.clip_grad_norm_(denoiser.parameters(), float(o["clip_grad"])))
            opt.step()
            decay = ema.update(denoiser, step)
            lv = loss.item()
            if not math.isfinite(lv):
                raise RuntimeError(f"loss is {lv} at step {step}; lower optim.lr")
            n_img += len(idx) * dist_info.world
            ips = n_img / max(time.time() - t0, 1e-9)
            if dist_info.is_main:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{lv:.4f}", img_s=f"{ips:.0f}", refresh=False)
                if step % t_cfg["log_every"] == 0 or i == niter - 1:
                    metrics.log({"step": step, "epoch": epoch, "loss": lv, "lr": lr, "ema_decay": decay,
                                 "grad_norm": gnorm, "images_per_s": ips, "elapsed_s": time.time() - t_start})
        rng_states = _gather_rng(gen, dist_info)  # every rank's generator, so that --resume is exact
        if dist_info.is_main:
            save_checkpoint(run / CHECKPOINT, {"denoiser": denoiser, "ema": ema.model}, {"adamw": opt},
                            rng_states, {"epoch": epoch, "step": (epoch + 1) * niter, "world": dist_info.world})
        barrier()
    bar.close()
    if dist_info.is_main:
        export(run, cfg, ema.model, encoder_spec, encoder, ae, ae_path, latent_size)
        run.finish(train_seconds=round(time.time() - t_start, 1))
    barrier()
    cleanup()
    return run


def export(run: RunDir, cfg: dict, ema_model: Denoiser, encoder_spec: str, encoder, ae, ae_path: str | None,
           latent_size: int) -> None:
    """Final, self-contained generator: EMA weights + eldm.json + copies of the encoder and autoencoder."""
    enc_dir = run / ENCODER_DIR
    src = Path(encoder_spec)
    if src.is_dir():
        enc_dir.mkdir(exist_ok=True)
        which = cfg["cond"]["which"]
        shutil.copyfile(src / f"{which}_backbone.safetensors", enc_dir / f"{which}_backbone.safetensors")
        shutil.copyfile(src / "config.yaml", enc_dir / "config.yaml")
        shutil.copyfile(src / "manifest.json", enc_dir / "manifest.json")
    if ae_path is not None:
        (run / AE_DIR).mkdir(exist_ok=True)
        for name in (AE_WEIGHTS, AE_CONFIG):
            shutil.copyfile(Path(ae_path) / name, run / AE_DIR / name)
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
