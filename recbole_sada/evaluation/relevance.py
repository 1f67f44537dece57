"""Relevance of augmented samples (BASRec, Table 6): how close the model's output representations of
the augmented sequences stay to those of the original sequences."""
import torch
import torch.nn.functional as F

__all__ = ["augmentation_similarity"]


@torch.no_grad()
def augmentation_similarity(H, H_aug, mask=None, eps=1e-8):
    """Mean cosine similarity between original and augmented output representations.

    Args:
        H (Tensor): original outputs, ``(B, L, d)`` (one vector per position) or ``(B, d)``.
        H_aug (Tensor): augmented outputs, same shape as ``H``.
        mask (Tensor, optional): which vectors count, ``(B, L)`` (or ``(B,)``) bool / 0-1, e.g. the
            non-padding positions ``item_seq > 0``; None counts every vector.
        eps (float): guards the norm of all-zero vectors (their cosine is 0).

    Returns:
        Tensor: a detached 0-dim float tensor, the mean cosine over the counted vectors (NaN when the
        mask selects nothing).
    """
    if H.shape != H_aug.shape:
        raise ValueError(f"augmentation_similarity: shapes differ, {tuple(H.shape)} vs {tuple(H_aug.shape)}")
    cos = F.cosine_similarity(H.float(), H_aug.float(), dim=-1, eps=eps)
    if mask is None:
        return cos.mean()
    mask = mask.to(device=cos.device)
    if mask.shape != cos.shape:
        raise ValueError(
            f"augmentation_similarity: mask shape {tuple(mask.shape)} does not match {tuple(cos.shape)}"
        )
    mask = mask.bool()
    count = mask.sum()
    if count == 0:
        return torch.tensor(float("nan"), device=cos.device)
    return cos[mask].sum() / count
