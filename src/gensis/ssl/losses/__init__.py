"""Losses of the SSL methods, one per file, each with its formula and the original implementation it follows.

    ibot_loss.py                 iBOT (Zhou et al., 2022): CLS self-distillation + masked patch term
    dinov2_dino_loss.py          DINOv2 (Oquab et al., 2023) image-level DINO loss
    dinov2_ibot_patch_loss.py    DINOv2 masked-patch (iBOT) loss
    koleo_loss.py                KoLeo differential-entropy regulariser (Sablayrolles et al., 2019)
    multipos_contrastive_loss.py NT-Xent / StableRep multi-positive contrastive loss
    gen_contrastive_loss.py      Gen-SIS Eq. 8: disentanglement for contrastive methods
    centering.py                 teacher targets: softmax centering (lazy EMA center) and Sinkhorn-Knopp
    gather.py                    all-gather with gradients (negatives across ranks)
"""
