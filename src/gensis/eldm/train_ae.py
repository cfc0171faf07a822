"""``gensis eldm train-ae``: the VQ-f4 autoencoder of the E-LDM (paper Sec. 9.5.1), trained on the same
unlabeled images as the encoder.

Loss (taming-transformers / LDM's ``VQLPIPSWithDiscriminator`` without the perceptual term, which needs
downloaded VGG weights):

    L = λ₁ ‖x − x̂‖₁ + λ₂ ‖x − x̂‖₂² + λ_q (‖z − sg[z_q]‖² + β ‖sg[z] − z_q‖²)  [+ λ_d · (−D(x̂))]

(commitment + codebook terms exactly as diffusers' ``VectorQuantizer`` with ``legacy=True``, β = 0.25) and, when ``ae.loss.disc_weight`` > 0, a PatchGAN
discriminator D (Isola et al., 2017) trained with the hinge loss from step ``disc_start`` on. The
reconstruction error (MSE, PSNR, L1 through the quantizer) on held-out images is logged every epoch and
written to the manifest and to ``autoencoder.json``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gensis.checkpoint import load_checkpoint, load_optimizer, save_checkpoint, sub_state
from gensis.data.loader import ImageBatches
from gensis.data.sources import open_data
from gensis.device import autocast
from gensis.distributed import barrier, cleanup, setup_training
from gensis.eldm.autoencoder import VQAutoencoder, build_vq, save_autoencoder, to_model_space
from gensis.errors import UserError
from gensis.progress import progress
from gensis.rundir import MetricsLog, RunDir

CHECKPOINT = "checkpoint.safetensors"


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming's ``NLayerDiscriminator``): a map of real/fake logits over patches."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = channels
        for i in range(1, layers):
            nxt = channels * min(2 ** i, 8)
            seq += [nn.Conv2d(ch, nxt, 4, 2 if i < layers - 1 else 1, 1, bias=False), nn.GroupNorm(8, nxt),
                    nn.LeakyReLU(0.2, True)]
            ch = nxt
        seq += [nn.Conv2d(ch, 1, 3, 1, 1)]
        self.net = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1, h, w)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())


@torch.no_grad()
def reconstruction_error(ae: VQAutoencoder, images: torch.Tensor, device, batch_size: int = 256) -> dict:
    """MSE, L1 (in [−1, 1] units) and PSNR (on [0, 255]) of x → quantized latents → x̂ on ``images`` (uint8)."""
    se, ae_sum, n_px = 0.0, 0.0, 0
    psnr = []
    for lo in range(0, len(images), batch_size):
        x = to_model_space(images[lo:lo + batch_size], device)
        xh = ae.decode(ae.encode(x)).clamp(-1, 1)
        d = xh - x
        se += float(d.pow(2).sum())
        ae_sum += float(d.abs().sum())
        n_px += d.numel()
        mse255 = (d * 127.5).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)  # (B,)
        psnr.append((10 * torch.log10(255.0 ** 2 / mse255)).cpu())
    return {"val_mse": se / n_px, "val_l1": ae_sum / n_px, "val_psnr": float(torch.cat(psnr).mean())}


@torch.no_grad()
def latent_scale(ae: VQAutoencoder, batches: ImageBatches, device, max_batches: int = 20) -> float:
    """1 / std of the pre-quantization latents (LDM's ``scale_by_std``)."""
    zs = []
    for i, (images, _) in enumerate(batches.epoch(0)):
        if i >= max_batches:
            break
        zs.append(ae.vq.encode(to_model_space(images, device)).latents.float().cpu())
    return float(1.0 / torch.cat(zs).std().clamp_min(1e-6))


def train_ae(cfg: dict, data: str, out: str | Path, resume: bool = False, quiet: bool = False) -> RunDir:
    """Train (or resume) the VQ autoencoder; returns the run directory."""
    a, t_cfg = cfg["ae"], cfg["train"]
    o, lw = a["optim"], a["loss"]
    device, dist_info, bf16, seed = setup_training(t_cfg)
    run = RunDir(out)
    if run.is_done() and not resume:
        raise UserError(f"{out} already holds a finished {run.manifest().get('stage')} run; use another --out")
    size = int(cfg["data"]["image_size"])
    levels = len(a["model"]["block_out_channels"])
    if size % 2 ** (levels - 1):
        raise UserError(f"data.image_size={size} must be divisible by the autoencoder's factor {2 ** (levels - 1)}")
    d = cfg["data"]
    ds = open_data(data, "train", d["val_fraction"], d["split_seed"], d["limit"])
    val = open_data(data, "val", d["val_fraction"], d["split_seed"], None)
    if len(val) == 0:
        val = ds
    n_val = min(int(a["val_images"]), len(val))
    val_idx = np.sort(np.random.default_rng(seed).choice(len(val), n_val, replace=False))
    val_images = ImageBatches(val.subset(val_idx), max(n_val, 1), shuffle=False, drop_last=False,
                              load_size=size)
    val_images = next(iter(val_images.epoch(0)))[0]  # (n_val, 3, S, S) uint8
    bs = int(o["batch_size"])
    if bs % dist_info.world or len(ds) < bs:
        raise UserError(f"ae.optim.batch_size={bs}: must be divisible by {dist_info.world} and <= {len(ds)} images")
    batches = ImageBatches(ds, bs, seed, dist_info.rank, dist_info.world, size, d["num_workers"])
    niter = len(batches)

    torch.manual_seed(seed)
    ae = VQAutoencoder(build_vq(a["model"], size)).to(device)
    lr = float(o["lr"]) * (bs if o["scale_lr"] else 1)
    opt = torch.optim.AdamW(ae.parameters(), lr=lr, betas=tuple(o["betas"]), weight_decay=float(o["weight_decay"]))
    disc = opt_d = None
    if float(lw["disc_weight"]) > 0:
        disc = PatchDiscriminator(int(lw["disc_channels"]), int(lw["disc_layers"])).to(device)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=lr, betas=tuple(o["betas"]), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed * 1000 + dist_info.rank)  # flips

    start_epoch = 0
    if resume and (run / CHECKPOINT).is_file():
        tensors, info = load_checkpoint(run / CHECKPOINT)
        ae.vq.load_state_dict(sub_state(tensors, "vq"))
        load_optimizer(opt, tensors, "optim.ae", info["param_groups"]["ae"])
        if disc is not None and "disc" in info["param_groups"]:
            disc.load_state_dict(sub_state(tensors, "disc"))
            load_optimizer(opt_d, tensors, "optim.disc", info["param_groups"]["disc"])
        gen.set_state(tensors["extra.rng"])
        start_epoch = info["meta"]["epoch"] + 1
    if dist_info.is_main:
        run.start("eldm-ae", cfg, seed, {"data": data, "data_identity": ds.identity}, resume=resume)
    barrier()
    metrics = MetricsLog(run / "metrics.jsonl", keep_until_step=start_epoch * niter if resume else None) \
        if dist_info.is_main else None
    if dist_info.is_main and not quiet and start_epoch == 0:
        n_par = sum(p.numel() for p in ae.parameters()) / 1e6
        print(f"[gensis] VQ autoencoder f{ae.factor}: {size}px -> {ae.channels}x{size // ae.factor}x{size // ae.factor}, "
              f"{n_par:.2f}M parameters, {niter} steps/epoch", file=sys.stderr)
    model = ae
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(ae)
    bar = progress(total=o["epochs"] * niter, initial=start_epoch * niter, disable=not dist_info.is_main or quiet,
                   desc="eldm train-ae", unit="it")
    t_start = time.time()
    rec = {}
    for epoch in range(start_epoch, o["epochs"]):
        for i, (images, _) in enumerate(batches.epoch(epoch)):
            step = epoch * niter + i
            x = to_model_space(images, device)
            if cfg["data"]["hflip"]:
                flip = (torch.rand(len(x), generator=gen) < 0.5).to(device).view(-1, 1, 1, 1)
                x = torch.where(flip, x.flip(-1), x)
            w = int(o["warmup_steps"])
            for g in opt.param_groups:
                g["lr"] = lr * (min(1.0, (step + 1) / w) if w > 0 else 1.0)
            with autocast(device, bf16):
                xh, q_loss = model(x)  # (B, 3, S, S), codebook + commitment loss
                xh = xh.float()
                l1 = (xh - x).abs().mean()
                l2 = (xh - x).pow(2).mean()
                loss = float(lw["l1"]) * l1 + float(lw["l2"]) * l2 + float(lw["codebook"]) * q_loss.float()
                use_d = disc is not None and step >= int(lw["disc_start"])
                g_loss = torch.zeros(())
                if use_d:
                    g_loss = -disc(xh).float().mean()
                    loss = loss + float(lw["disc_weight"]) * g_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            d_loss = torch.zeros(())
            if use_d:
                with autocast(device, bf16):
                    d_loss = hinge_d_loss(disc(x).float(), disc(xh.detach()).float())
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"autoencoder loss is {loss.item()} at step {step}; lower ae.optim.lr")
            if dist_info.is_main:
                bar.update(1)
                bar.set_postfix(epoch=epoch, l1=f"{l1.item():.4f}", refresh=False)
                if step % t_cfg["log_every"] == 0 or i == niter - 1:
                    metrics.log({"step": step, "epoch": epoch, "loss": loss.item(), "l1": l1.item(), "l2": l2.item(),
                                 "codebook": q_loss.item(), "g_loss": g_loss.item(), "d_loss": d_loss.item(),
                                 "elapsed_s": time.time() - t_start})
        if dist_info.is_main:
            ae.eval()
            rec = reconstruction_error(ae, val_images, device)
            ae.train()
            metrics.log({"step": (epoch + 1) * niter - 1, "epoch": epoch, **rec, "elapsed_s": time.time() - t_start})
            modules = {"vq": ae.vq}
            optims = {"ae": opt}
            if disc is not None:
                modules["disc"], optims["disc"] = disc, opt_d
            save_checkpoint(run / CHECKPOINT, modules, optims, {"rng": gen.get_state()},
                            {"epoch": epoch, "step": (epoch + 1) * niter})
        barrier()
    bar.close()
    if dist_info.is_main:
        ae.eval()
        if not rec:
            rec = reconstruction_error(ae, val_images, device)
        ae.scale = latent_scale(ae, ImageBatches(ds, 256, seed, load_size=size, shuffle=False, drop_last=False),
                                device)
        ident = save_autoencoder(run.path, ae, a["model"], size, {"val": rec, "val_images": n_val})
        run.finish(autoencoder_identity=ident, val=rec, train_seconds=round(time.time() - t_start, 1))
        if not quiet:
            print(f"[gensis] held-out reconstruction ({n_val} images): MSE {rec['val_mse']:.5f}, "
                  f"L1 {rec['val_l1']:.4f}, PSNR {rec['val_psnr']:.2f} dB", file=sys.stderr)
    barrier()
    cleanup()
    return run
