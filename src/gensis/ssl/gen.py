"""Gen-SIS around any method: generative views, interpolated views and the disentanglement loss.

Written once for every method; it knows only the method's ``target`` (``gensis.ssl.methods.base``):

    views of the real images ──▶ [generative] each chosen global view of sample b is, with prob. p, a view of
                                  one of b's synthetic images (bank) instead (locals optionally too)
    [interpolation] I_int (bank: E-LDM interpolation of e(I_1), e(I_2); pixel: α·I_1 + (1 − α)·I_2) and I_2
                     ──▶ extra global-size views "interp" (student) and "secondary" (teacher, or student
                         for a contrastive method)
    distillation: L = CE(center+sharpen(α·t(I_1) + (1 − α)·t(I_2)), s(I_int))          Gen-SIS Eq. 7
    contrastive:  L = Eq. 8: f(I_int) with f(I_1) (weight α) and f(I_2) (weight 1 − α) as positives

``GenViews`` holds the random state (a numpy Generator, saved per rank by the training loop).

Fidelity filter (``gen.bank_min_score`` / ``bank_keep_quantile`` / ``bank_weighting``, ``gensis.bank.scores``):
a sample's generative entry k and interpolation α are drawn among its *kept* entries (∝ weight); a sample with
no kept generative entry keeps its real views; a sample with no kept interpolation (among ``gen.alphas``) gets
a per-sample weight 0 in the disentanglement term (its α is NaN between ``add_views`` and ``loss``; the term is
the sum over kept samples divided by the batch size B, as a per-sample weight of 0 would give).
"""

from __future__ import annotations

import numpy as np
import torch

from gensis.bank.scores import draw, entry_weights, filter_active
from gensis.data.batch_augment import BatchDINOAugmentation, to_float
from gensis.errors import UserError
from gensis.ssl.disentangle_loss import mix_teacher_outputs
from gensis.ssl.methods.base import Method, StepInfo, Views


def _check_stored_alphas(alphas: list[float], bank) -> None:
    """A UserError unless the bank holds an interpolation at every α of ``gen.alphas``: the disentanglement
    target mixes the teacher's outputs with the α asked for, so an image interpolated at another α (the bank's
    nearest) would train on a target that does not match it."""
    stored = [float(a) for a in bank.alphas]
    missing = [a for a in alphas if not any(abs(a - b) <= 1e-6 for b in stored)]
    if not stored:
        raise UserError(f"bank {bank.path} holds no interpolations (it was generated with gen.alphas=[]): train "
                        f"with --interp none (generative views only) or --interp pixel, or generate a bank with "
                        f"gen.alphas")
    if missing:
        fmt = lambda v: "[" + ",".join(f"{a:g}" for a in v) + "]"  # noqa: E731
        raise UserError(f"bank {bank.path} holds interpolations at alphas {fmt(stored)}, not at {fmt(missing)} of "
                        f"gen.alphas={fmt(alphas)}: train with gen.alphas={fmt(stored)} (or some of them), or "
                        f"generate a bank with gen.alphas={fmt(alphas)}")


class GenViews:
    """Where the extra (Gen-) inputs come from: an augmentation bank, or pixel interpolation.

    ``bank`` is a ``gensis.bank.BankReader`` (or None). With ``interp == 'pixel'`` the interpolated image is
    α·I_1 + (1 − α)·I_2 of two real images with a random secondary drawn by seed (Table 12 ablation).
    """

    gen_w: np.ndarray | None = None  # fidelity-filter sampling weights (N, K); None: no filter
    int_w: np.ndarray | None = None  # (N, len(gen.alphas)); None: no filter
    filter_message: str | None = None  # "[gensis] bank fidelity filter: ... kept"; None: no filter

    def __init__(self, cfg: dict, ds, images: torch.Tensor | None, bank=None, seed: int = 0, rank: int = 0):
        self.g = cfg["gen"]
        self.ds, self.bank = ds, bank
        self.interp = self.g["interp"]
        self.alphas = [float(a) for a in self.g["alphas"]]
        self.rng = np.random.default_rng([seed, 77] if rank == 0 else [seed, 77, rank])
        self.images = images  # all real images (N,3,H,W) uint8, for secondaries in pixel mode
        if self.interp == "bank" and bank is None:
            raise UserError("gen.interp=bank needs --bank BANK")
        if self.interp not in ("none", "bank", "pixel"):
            raise UserError(f"gen.interp must be none, bank or pixel, got '{self.interp}'")
        if self.interp == "bank":
            _check_stored_alphas(self.alphas, bank)
        if bank is not None and filter_active(self.g):
            self._build_filter()

    def _build_filter(self) -> None:
        bank, K = self.bank, self.bank.num_generative
        w = entry_weights(bank.scores(), K, self.g)  # (N, E)
        self.gen_w = w[:, :K]
        msg = f"[gensis] bank fidelity filter: {int((self.gen_w > 0).sum())}/{self.gen_w.size} generative entries kept"
        if bank.alphas and self.interp == "bank":
            self.int_w = w[:, bank.layout.alpha_slot(np.asarray(self.alphas))]  # (N, A) in gen.alphas order
            msg += f", {int((self.int_w > 0).sum())}/{self.int_w.size} interpolations kept"
        self.filter_message = msg  # shown by the training loop unless --quiet (``PretrainTask.start_message``)

    @property
    def uses_generative(self) -> bool:
        return self.bank is not None and self.g["generative_prob"] > 0 and self.bank.num_generative > 0

    def real(self, idx: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        """Real images ``idx`` as uint8 (B, 3, H, W) of ``like``'s size, loaded as the training batches are
        (a folder's images differ in size: each is resized and centre-cropped like the loader does)."""
        if self.images is not None:
            return _match_size(self.images[torch.from_numpy(idx)], like)
        from gensis.data.loader import load_image

        size = like.shape[-1] if like.shape[-1] == like.shape[-2] else None
        return _match_size(torch.stack([load_image(self.ds, int(i), size) for i in idx]), like)  # (B, 3, H, W)

    def generative(self, idx: np.ndarray, like: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """One random synthetic image per sample, resized like the real batch; and which samples use it."""
        use = self.rng.random(len(idx)) < self.g["generative_prob"]
        if self.gen_w is None:
            k = self.rng.integers(0, self.bank.num_generative, len(idx))
        else:  # among the kept entries; none kept: the real image's views
            k, any_kept = draw(self.gen_w[idx], self.rng)
            use &= any_kept
        syn = self.bank.generative_batch(idx, k)  # (B, 3, h, w) uint8
        return _match_size(syn, like), use

    def interpolation(self, idx: np.ndarray, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(I_int, I_2, alpha) for each sample; uint8 (B,3,H,W), uint8 (B,3,H,W), float (B,)."""
        kept = None
        if self.int_w is not None and self.interp == "bank":  # among the kept interpolations of each image
            j, kept = draw(self.int_w[idx], self.rng)
            alpha = np.asarray(self.alphas, np.float64)[j]
        else:
            alpha = self.rng.choice(self.alphas, len(idx))
        if self.interp == "bank":
            img_int, sec = self.bank.interpolated_batch(idx, alpha)
            img_int = _match_size(img_int, like)
            img2 = self.real(sec, like)
        else:  # pixel
            sec = _random_secondary(idx, len(self.ds), self.rng, getattr(self.ds, "groups", None))
            img2 = self.real(sec, like)
            a = torch.from_numpy(alpha).float().view(-1, 1, 1, 1)
            img_int = (a * like.float() + (1 - a) * img2.float()).round().clamp(0, 255).to(torch.uint8)
        alpha_t = torch.from_numpy(alpha).float()
        if kept is not None:
            alpha_t[torch.from_numpy(~kept)] = float("nan")  # no kept interpolation: weight 0 in loss()
        return img_int, img2, alpha_t

    # -- the two things a pretraining step asks of Gen- ---------------------------------------------------------
    def add_views(self, views: Views, images: torch.Tensor, idx: np.ndarray, aug: BatchDINOAugmentation,
                  method: Method) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Replace generative views in ``views`` (in place) and add the interpolation views to ``views.extra``.

        Returns the teacher's extra views and alpha (B,) (None without interpolation).
        """
        device = aug.device
        if self.uses_generative:  # replace chosen global views by views of a synthetic image
            syn, use = self.generative(idx, images)
            syn_views = aug.global_views(to_float(syn, device))
            mask = torch.from_numpy(use).to(device).view(-1, 1, 1, 1)
            for v in self.g["generative_views"]:
                views.global_views[v] = torch.where(mask, syn_views[v], views.global_views[v])
            if self.g["local_from_bank"] and views.local_views:
                syn_x = torch.where(mask, to_float(syn, device), to_float(images, device))
                c = aug.cfg
                views.local_views = [aug.view(syn_x, c.local_size, c.local_scale, 0.5)
                                     for _ in range(len(views.local_views))]
        if self.interp == "none":
            return {}, None
        img_int, img2, alpha = self.interpolation(idx, images)
        c = aug.cfg
        views.extra["interp"] = aug.view(to_float(img_int, device), c.global_size, c.global_scale, 1.0)
        v_2 = aug.view(to_float(img2, device), c.global_size, c.global_scale, 1.0)
        if method.target == "contrastive":
            views.extra["secondary"] = v_2
            return {}, alpha.to(device)
        return {"secondary": v_2}, alpha.to(device)

    def loss(self, method: Method, s_out: dict, t_out: dict | None, alpha: torch.Tensor,
             step: StepInfo) -> torch.Tensor:
        """The disentanglement term for the method's target kind (before ``gen.disent_weight``)."""
        if self.int_w is not None:
            return self._filtered_loss(method, s_out, t_out, alpha, step)
        s_int = s_out["extra"]["interp"]  # (B, K)
        if method.target == "distillation":
            # teacher(I_1): the first global view of the real image (a vanilla view of img_1)
            mixed = mix_teacher_outputs(t_out["global"][0], t_out["extra"]["secondary"], alpha)  # (B, K)
            return method.disentangle_distill(s_int, mixed, step)
        if method.target == "contrastive":
            b = s_int.shape[0]
            f_real = torch.cat([s_out["global"][0], s_out["extra"]["secondary"]])  # (2B, K)
            i1 = torch.arange(b, device=s_int.device)
            return method.disentangle_contrastive(s_int, f_real, i1, i1 + b, alpha, step)
        raise ValueError(f"method {method.name}: unknown target '{method.target}'")

    def _filtered_loss(self, method: Method, s_out: dict, t_out: dict | None, alpha: torch.Tensor,
                       step: StepInfo) -> torch.Tensor:
        """The same term over the samples with a kept interpolation (finite α), times (kept / B)."""
        s_int = s_out["extra"]["interp"]  # (B, K)
        b = s_int.shape[0]
        rows = torch.nonzero(~torch.isnan(alpha)).squeeze(1)  # (n,)
        n = int(rows.numel())
        if n == 0:
            return s_int.float().sum() * 0.0  # keeps the graph (and DDP) intact
        a = alpha[rows]
        if method.target == "distillation":
            mixed = mix_teacher_outputs(t_out["global"][0][rows], t_out["extra"]["secondary"][rows], a)  # (n, K)
            term = method.disentangle_distill(s_int[rows], mixed, step)
        elif method.target == "contrastive":
            f_real = torch.cat([s_out["global"][0], s_out["extra"]["secondary"]])  # (2B, K)
            term = method.disentangle_contrastive(s_int[rows], f_real, rows, rows + b, a, step)
        else:
            raise ValueError(f"method {method.name}: unknown target '{method.target}'")
        return term * (n / b)


def _random_secondary(idx: np.ndarray, n: int, rng: np.random.Generator, groups: np.ndarray | None) -> np.ndarray:
    sec = rng.integers(0, n, len(idx))
    if groups is not None and len(np.unique(groups)) > 1:  # a secondary from another group (slide)
        for j in range(len(idx)):
            while groups[sec[j]] == groups[idx[j]]:
                sec[j] = rng.integers(0, n)
    else:
        sec = np.where(sec == idx, (sec + 1) % n, sec)
    return sec


def _match_size(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(x, list(like.shape[-2:]), antialias=True)
