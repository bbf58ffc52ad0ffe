"""Self-expressive network (Zhang, You, Lin & Vidal, CVPR 2021) over anchor cells.

Coefficients are a function of the two latents, c(z_n, z_i), not free parameters, so a cell
never seen in training gets coefficients by a forward pass.
"""

from __future__ import annotations

import torch
from torch import nn


class SelfExpressiveNetwork(nn.Module):
    """Coefficients ``c_{n,i} = relu(<q(z_n), k(z_i)> - b) / d`` of cells over anchors.

    Parameters
    ----------
    n_latent
        Latent dimension of the modality.
    n_hidden
        Hidden units of the query and key MLPs.
    n_embed
        Embedding dimension ``d`` of query and key; coefficients are scaled by ``1/d``.
    """

    def __init__(self, n_latent: int, n_hidden: int = 128, n_embed: int = 64):
        super().__init__()

        def mlp() -> nn.Sequential:
            # tanh bounds the embeddings so that 0 <= c <= 1.
            return nn.Sequential(
                nn.Linear(n_latent, n_hidden),
                nn.ReLU(),
                nn.Linear(n_hidden, n_embed),
                nn.Tanh(),
            )

        self.query = mlp()
        self.key = mlp()
        # Adaptive soft threshold: learned, keeps coefficients non-negative and sparse.
        self.threshold = nn.Parameter(torch.zeros(1))
        self.shrink = 1.0 / n_embed

    def forward(
        self, z: torch.Tensor, z_anchor: torch.Tensor, self_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Coefficients of each cell over the anchors.

        Parameters
        ----------
        z
            Cell latents, shape ``(B, n_latent)``.
        z_anchor
            Anchor latents, shape ``(A, n_latent)``.
        self_mask
            Boolean, shape ``(B, A)``: True where cell ``n`` *is* anchor ``i`` (c must be 0).

        Returns
        -------
        Coefficients, shape ``(B, A)``, non-negative.
        """
        s = self.query(z) @ self.key(z_anchor).T
        if self_mask is not None:
            s = s.masked_fill(self_mask, float("-inf"))
        # The threshold never cuts a cell's best anchor: every cell keeps a neighbour and a
        # gradient, so a modality cannot collapse to all-zero coefficients (a dead ReLU).
        ceiling = s.max(-1, keepdim=True).values.detach() - 1e-3
        c = torch.relu(s - torch.minimum(self.threshold, ceiling)) * self.shrink
        return c


def locality_weights(z: torch.Tensor, z_anchor: torch.Tensor) -> torch.Tensor:
    """Per-cell L1 weights ``w_{n,i} = ||z_n - z_i||^2 / mean_i ||z_n - z_i||^2``, ``(B, A)``.

    After Sparse Manifold Clustering and Embedding (Elhamifar & Vidal, NeurIPS 2011): an
    anchor costs in proportion to its distance, so a cell is expressed over its nearby
    anchors. Without it, non-negative sparse self-expression in a 10-dimensional latent can
    rebuild every cell from the anchors of one cell type (a cone that spans the latent), which
    reconstructs well but carries no information about who the cell's neighbours are.
    Normalised to mean 1 per cell, so the regulariser keeps the scale of the plain elastic net.
    Detached: the encoder must not shrink distances to lower the penalty.
    """
    d = torch.cdist(z.detach(), z_anchor.detach()).pow(2)
    return d / d.mean(-1, keepdim=True).clamp_min(1e-12)


def self_expression_error(
    z: torch.Tensor, z_hat: torch.Tensor, z_anchor: torch.Tensor
) -> torch.Tensor:
    """``||z_n - z_hat_n||^2`` over the anchors' mean per-dimension latent variance, ``(B,)``.

    The paper's plain error has a trivial minimum: shrink every latent towards one point and
    any coefficients rebuild it. Reconstruction resists that only where the modality carries
    much signal; a sparse one (Visium RNA, a few hundred counts per spot) collapsed. Dividing by
    the spread of the anchors (not detached) makes the error scale-free, and for a latent that
    matches its N(0, I) prior it is the plain error.
    """
    return (z - z_hat).pow(2).sum(-1) / z_anchor.var(0).mean().clamp_min(1e-6)


def elastic_net(c: torch.Tensor, lam: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-cell elastic net ``sum_i lam*w_i*|c_i| + (1-lam)/2 * c_i^2``, shape ``(B,)``.

    ``weights`` (``(B, A)``, default 1) weigh the L1 part (see :func:`locality_weights`).
    """
    l1 = c.abs() if weights is None else weights * c.abs()
    return (lam * l1 + 0.5 * (1.0 - lam) * c.pow(2)).sum(-1)
