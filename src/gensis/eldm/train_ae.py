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

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gensis.configs.whole import check_whole
from gensis.data.loader import ImageBatches
from gensis.data.sources import open_data
from gensis.eldm.autoencoder import VQAutoencoder, build_vq, save_autoencoder, to_model_space
from gensis.errors import UserError, same_on_every_rank
from gensis.rundir import RunDir
from gensis.train.foreach import clip_gradients
from gensis.train.loop import Runtime, Task, claim_and_build, fit


def check_ae_size(cfg: dict) -> None:
    """``data.image_size`` must be divisible by the autoencoder's downsampling factor (``ae.model``'s levels)."""
    size, levels = int(cfg["data"]["image_size"]), len(cfg["ae"]["model"]["block_out_channels"])
    if size % 2 ** (levels - 1):
        raise UserError(f"data.image_size={size} must be divisible by the autoencoder's factor {2 ** (levels - 1)}")


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


class AutoencoderTask(Task):
    """VQ autoencoder training as a loop ``Task``: reconstruction + codebook loss, optional PatchGAN step."""

    stage, desc, family = "eldm-ae", "eldm train-ae", "eldm"
    # sections `eldm train-ae` does not read
    resume_ignore = ("space", "pixel_patch", "unet", "cond", "diffusion", "optim", "ema", "sample", "figures", "eval")

    def __init__(self, cfg: dict, data: str, rt: Runtime):
        a = cfg["ae"]
        o, self.lw = a["optim"], a["loss"]
        self.cfg, self.rt = cfg, rt
        world, rank, seed, device = rt.dist.world, rt.dist.rank, rt.seed, rt.device
        size = self.size = int(cfg["data"]["image_size"])
        check_whole("eldm-ae", cfg)  # the rules combining keys (as --print-config)
        d = cfg["data"]
        skip = d.get("skip_bad_images", False)
        self.ds = ds = open_data(data, "train", d["val_fraction"], d["split_seed"], d["limit"], skip)
        val = open_data(data, "val", d["val_fraction"], d["split_seed"], None, skip)
        if len(val) == 0:
            val = ds
        self.n_val = n_val = min(int(a["val_images"]), len(val))
        val_idx = np.sort(np.random.default_rng(seed).choice(len(val), n_val, replace=False))
        val_images = ImageBatches(val.subset(val_idx), max(n_val, 1), shuffle=False, drop_last=False,
                                  load_size=size)
        self.val_images = next(iter(val_images.epoch(0)))[0]  # (n_val, 3, S, S) uint8
        bs = int(o["batch_size"])
        if bs % world or len(ds) < bs:
            raise UserError(f"ae.optim.batch_size={bs}: must be divisible by {world} and <= {len(ds)} images")
        self.loader = ImageBatches(ds, bs, seed, rank, world, size, d["num_workers"])
        self.set_budget(o, len(self.loader), "ae.optim")  # epochs: more on a small set (ae.optim.min_updates)
        self.log_every = int(cfg["train"]["log_every"])

        torch.manual_seed(seed)
        self.model = ae = VQAutoencoder(build_vq(a["model"], size)).to(device)
        self.lr = float(o["lr"]) * (bs if o["scale_lr"] else 1)
        self.optimizer = torch.optim.AdamW(ae.parameters(), lr=self.lr, betas=tuple(o["betas"]),
                                           weight_decay=float(o["weight_decay"]), fused=rt.fused_optim)
        self.disc = self.opt_d = None
        if float(self.lw["disc_weight"]) > 0:
            self.disc = PatchDiscriminator(int(self.lw["disc_channels"]), int(self.lw["disc_layers"])).to(device)
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=self.lr, betas=tuple(o["betas"]),
                                           weight_decay=0.0, fused=rt.fused_optim)
            if rt.dist.enabled:  # the discriminator is stepped outside DDP: same start on every rank
                import torch.distributed as dist

                for t in self.disc.state_dict().values():
                    dist.broadcast(t, 0)
        rt.seed_ranks()
        self.gen = torch.Generator().manual_seed(seed * 1000 + rank)  # flips
        self.inputs = {"data": data, "data_identity": ds.identity, "data_layout": ds.layout}
        self.rec: dict = {}

    def start_message(self) -> str:
        ae, size = self.model, self.size
        n_par = sum(p.numel() for p in ae.parameters()) / 1e6
        return (f"[gensis] VQ autoencoder f{ae.factor}: {size}px -> {ae.channels}x{size // ae.factor}x"
                f"{size // ae.factor}, {n_par:.2f}M parameters, {self.niter} steps/epoch")

    def batches(self, epoch: int):
        return self.loader.epoch(epoch)

    def schedule(self, it: int, epoch: int) -> dict[str, float]:
        w = int(self.cfg["ae"]["optim"]["warmup_steps"])
        lr = self.lr * (min(1.0, (it + 1) / w) if w > 0 else 1.0)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return {"lr": lr}

    def step(self, model: nn.Module, batch, it: int, epoch: int):
        images, _ = batch
        lw, device = self.lw, self.rt.device
        x = to_model_space(images, device)
        if self.cfg["data"]["hflip"]:
            flip = (torch.rand(len(x), generator=self.gen) < 0.5).to(device).view(-1, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)
        with self.rt.autocast():
            xh, q_loss = model(x)  # (B, 3, S, S), codebook + commitment loss
            xh = xh.float()
            l1 = (xh - x).abs().mean()
            l2 = (xh - x).pow(2).mean()
            loss = float(lw["l1"]) * l1 + float(lw["l2"]) * l2 + float(lw["codebook"]) * q_loss.float()
            self.use_d = self.disc is not None and it >= int(lw["disc_start"])
            g_loss = torch.zeros((), device=device)
            if self.use_d:
                g_loss = -self.disc(xh).float().mean()
                loss = loss + float(lw["disc_weight"]) * g_loss
        self._x, self._xh = x, xh
        return loss, {"l1": l1.detach(), "l2": l2.detach(), "codebook": q_loss.detach().float(),
                      "g_loss": g_loss.detach()}

    def after_update(self, it: int, epoch: int) -> dict:
        """The discriminator's hinge-loss step on (x, x̂) of this iteration (gradients averaged over ranks;
        its loss and gradient norm checked before its step, which is skipped like the autoencoder's)."""
        x, xh = self._x, self._xh
        self._x = self._xh = None
        if not self.use_d:
            return {"d_loss": torch.zeros((), device=x.device)}
        with self.rt.autocast():
            d_loss = hinge_d_loss(self.disc(x).float(), self.disc(xh.detach()).float())
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        if self.rt.dist.enabled:
            import torch.distributed as dist

            grads = [p.grad for p in self.disc.parameters() if p.grad is not None]
            flat = torch.cat([g.reshape(-1) for g in grads])  # one all-reduce for the whole discriminator
            dist.all_reduce(flat)
            torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(flat.div_(self.rt.dist.world).split(
                [g.numel() for g in grads]), grads)])
        if self.guard is not None:  # checked before its step, skipped (deferred) like the autoencoder's
            self.guard.check(it, d_loss, clip_gradients(list(self.disc.parameters()), None, None))
            self.guard.step(self.opt_d)
        else:
            self.opt_d.step()
        return {"d_loss": d_loss.detach()}

    def state_modules(self) -> dict[str, nn.Module]:
        mods = {"vq": self.model.vq}
        if self.disc is not None:
            mods["disc"] = self.disc
        return mods

    def state_optimizers(self) -> dict:
        optims = {"ae": self.optimizer}
        if self.disc is not None:
            optims["disc"] = self.opt_d
        return optims

    def generators(self) -> dict:
        return {"flip": self.gen}

    def end_epoch(self, epoch: int) -> dict:
        ae = self.model
        ae.eval()
        self.rec = reconstruction_error(ae, self.val_images, self.rt.device)
        ae.train()
        return self.rec

    @torch.no_grad()
    def sample_images(self, epoch: int, n: int = 8) -> dict[str, torch.Tensor]:
        """Held-out images (top row) and their reconstructions (bottom row): shown in TensorBoard per epoch."""
        from torchvision.utils import make_grid

        from gensis.eldm.autoencoder import to_uint8

        ae = self.model
        x = self.val_images[:n]  # (n, 3, S, S) uint8
        ae.eval()
        rec = to_uint8(ae(to_model_space(x, self.rt.device))[0].clamp(-1, 1))
        ae.train()
        return {"reconstructions": make_grid(torch.cat([x, rec]), nrow=len(x), padding=1)}

    def export(self, run: RunDir) -> dict:
        ae, device = self.model, self.rt.device
        ae.eval()
        rec = self.rec or reconstruction_error(ae, self.val_images, device)
        ae.scale = latent_scale(ae, ImageBatches(self.ds, 256, self.rt.seed, load_size=self.size, shuffle=False,
                                                 drop_last=False), device)
        ident = save_autoencoder(run.path, ae, self.cfg["ae"]["model"], self.size, {"val": rec, "val_images": self.n_val})
        self.quiet_summary = (f"[gensis] held-out reconstruction ({self.n_val} images): MSE {rec['val_mse']:.5f}, "
                              f"L1 {rec['val_l1']:.4f}, PSNR {rec['val_psnr']:.2f} dB")
        return {"autoencoder_identity": ident, "val": rec}


def train_ae(cfg: dict, data: str, out: str | Path, resume: bool = False, quiet: bool = False) -> RunDir:
    """Train (or resume) the VQ autoencoder; returns the run directory."""
    rt = Runtime.setup(cfg["train"])
    run = RunDir(out)
    if run.is_done() and not resume:
        with same_on_every_rank():
            raise UserError(f"{out} already holds a finished {run.manifest().get('stage')} run; use another --out")
    task = claim_and_build(run, rt, resume, AutoencoderTask, cfg, data, rt)
    fit(task, rt, run, resume=resume, quiet=quiet)
    if rt.is_main and not quiet and getattr(task, "quiet_summary", None):
        print(task.quiet_summary, file=sys.stderr)
    return run
