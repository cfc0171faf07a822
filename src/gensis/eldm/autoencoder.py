"""The space the denoiser works in: VQ-f4 latents (paper) or raw pixels (``space: pixel``).

Paper (Sec. 9.5.1): a VQ-f4 autoencoder, 256×256×3 → 64×64×3. Here: diffusers' ``VQModel`` with
``len(block_out_channels) − 1`` halvings (3 levels = f4), ``latent_channels`` = 3, trained by
``gensis eldm train-ae`` (see ``train_ae.py``).

As in latent diffusion (Rombach et al., 2022) the denoiser works on the encoder's output *before*
quantization and the decoder quantizes (LDM's ``VQModelInterface.decode``). Latents are multiplied by
``scale`` = 1 / std(latents of the training set) so that they have unit variance (LDM's ``scale_by_std``;
the paper is silent).

Both spaces expose the same small interface:

    encode(x)   float images in [−1, 1] (B, 3, S, S) → latents (B, C, S/f, S/f)
    decode(z)   latents → float images in [−1, 1]
    factor, channels, identity
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gensis.errors import UserError
from gensis.rundir import atomic_write_json, described_by, file_hash, load_tensors, read_json, save_tensors

AE_WEIGHTS = "autoencoder.safetensors"
AE_CONFIG = "autoencoder.json"


def to_model_space(images: torch.Tensor, device=None) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float in [−1, 1]."""
    return images.to(device).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [−1, 1] → uint8 (B, 3, H, W) on the CPU."""
    return x.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


class PixelSpace(nn.Module):
    """Identity autoencoder: the denoiser works on pixels.

    ``patch`` p > 1 folds each p×p block of pixels into channels (``pixel_unshuffle``: (3, S, S) →
    (3p², S/p, S/p)), a lossless, parameter-free "autoencoder" with p² times fewer positions to denoise,
    as the patchification of pixel-space diffusion transformers.
    """

    space = "pixel"

    def __init__(self, patch: int = 1):
        super().__init__()
        self.patch = int(patch)
        if self.patch < 1:
            raise UserError(f"pixel_patch must be >= 1, got {patch}")

    @property
    def factor(self) -> int:
        return self.patch

    @property
    def channels(self) -> int:
        return 3 * self.patch ** 2

    @property
    def identity(self) -> str:
        return "pixel" if self.patch == 1 else f"pixel-p{self.patch}"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.patch == 1 else nn.functional.pixel_unshuffle(x, self.patch)  # (B, 3p², S/p, S/p)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.patch == 1 else nn.functional.pixel_shuffle(z, self.patch)  # (B, 3, S, S)


def vq_kwargs(m: dict, image_size: int) -> dict:
    levels = list(m["block_out_channels"])
    return dict(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(levels), up_block_types=("UpDecoderBlock2D",) * len(levels),
        block_out_channels=tuple(levels), layers_per_block=int(m["layers_per_block"]),
        latent_channels=int(m["latent_channels"]), num_vq_embeddings=int(m["num_vq_embeddings"]),
        norm_num_groups=int(m["norm_num_groups"]), sample_size=image_size,
        mid_block_add_attention=bool(m["mid_attention"]),
    )


def build_vq(model_cfg: dict, image_size: int):
    from diffusers import VQModel

    return VQModel(**vq_kwargs(model_cfg, image_size))


class VQAutoencoder(nn.Module):
    """A trained ``VQModel`` with its latent scale; ``encode`` gives pre-quantization latents × scale."""

    space = "vq"

    def __init__(self, vq, scale: float = 1.0, identity: str = "untrained"):
        super().__init__()
        self.vq = vq
        self.scale = float(scale)
        self.identity = identity

    @property
    def factor(self) -> int:
        return 2 ** (len(self.vq.config.block_out_channels) - 1)

    @property
    def channels(self) -> int:
        return int(self.vq.config.latent_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vq.encode(x).latents * self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vq.decode(z / self.scale).sample  # quantizes, as LDM

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂, codebook + commitment loss) through the quantizer: the training forward pass."""
        out = self.vq(x)
        return out.sample, out.commit_loss.mean()


def save_autoencoder(folder: str | Path, ae: VQAutoencoder, model_cfg: dict, image_size: int, extra: dict | None = None
                     ) -> str:
    """Write ``autoencoder.safetensors`` + ``autoencoder.json`` (everything needed to rebuild it); returns its hash."""
    folder = Path(folder)
    save_tensors(folder / AE_WEIGHTS, ae.vq.state_dict(), {"scale": ae.scale})
    ident = file_hash(folder / AE_WEIGHTS)
    atomic_write_json(folder / AE_CONFIG, {"model": model_cfg, "image_size": image_size, "scale": ae.scale,
                                           "identity": ident, **(extra or {})})
    return ident


def load_autoencoder(folder: str | Path, device: str | torch.device = "cpu") -> VQAutoencoder:
    """An autoencoder from a ``gensis eldm train-ae`` run (or the copy inside an E-LDM run)."""
    from gensis.folder_kind import require_kind

    folder = Path(folder)
    require_kind(folder, "eldm-ae")
    if not (folder / AE_CONFIG).is_file():
        raise UserError(f"{folder} has no {AE_CONFIG}: is it a finished `gensis eldm train-ae` run?")
    info = read_json(folder / AE_CONFIG, "autoencoder description")
    with described_by(folder / AE_CONFIG, "autoencoder description"):
        size, scale = int(info["image_size"]), float(info["scale"])
        vq = build_vq(dict(info["model"]), size)
    vq.load_state_dict(load_tensors(folder / AE_WEIGHTS))
    vq.eval().requires_grad_(False)
    ae = VQAutoencoder(vq, scale, file_hash(folder / AE_WEIGHTS)).to(device)
    ae.image_size = size
    return ae
