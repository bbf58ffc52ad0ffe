"""Encoders: scvi-tools' ``Encoder``, with a sparse first layer for wide, sparse inputs (peaks)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from scvi.nn import Encoder
from torch import nn


def make_encoder(
    n_input: int,
    n_latent: int,
    n_batch: int,
    n_hidden: int,
    n_layers: int,
    dropout_rate: float,
    sparse_input: bool = False,
    n_cats_per_cov: Sequence[int] = (),
) -> nn.Module:
    """scvi-tools' Gaussian encoder with layer norm; :class:`SparseInputEncoder` for peaks.

    The batch and each extra categorical covariate (``n_cats_per_cov`` categories) enter every
    hidden layer one-hot. Layer norm, not batch norm: anchors and cells pass the encoder
    separately.
    """
    cls = SparseInputEncoder if sparse_input else Encoder
    return cls(
        n_input,
        n_latent,
        n_cat_list=[n_batch, *n_cats_per_cov],
        n_layers=n_layers,
        n_hidden=n_hidden,
        dropout_rate=dropout_rate,
        use_batch_norm=False,
        use_layer_norm=True,
    )


class SparseInputEncoder(nn.Module):
    """A sparse linear layer to ``n_hidden`` (layer norm, ReLU), then scvi-tools' ``Encoder``.

    Chromatin peaks are wide (50k+) and ~1 % non-zero: a sparse product costs O(nnz * n_hidden)
    instead of O(F * n_hidden) per cell, and the anchors' input can be kept sparse for good.
    The extra layer gives the two hidden layers that PeakVI also uses for peaks.

    Takes and returns what ``scvi.nn.Encoder`` does: ``(x, *cat) -> (q_m, q_v, z)``, with
    ``x`` dense or sparse CSR of shape ``(B, n_input)``. The categories (batch, covariates)
    enter the ``Encoder``'s layers, as in the dense encoder, not the sparse layer.
    """

    def __init__(self, n_input: int, n_output: int, n_hidden: int = 128, **kwargs):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_input, n_hidden))
        self.bias = nn.Parameter(torch.empty(n_hidden))
        bound = 1.0 / math.sqrt(n_input)  # nn.Linear's initialisation
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.norm = nn.LayerNorm(n_hidden, elementwise_affine=False)
        self.encoder = Encoder(n_hidden, n_output, n_hidden=n_hidden, **kwargs)

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor):
        if x.layout != torch.sparse_csr:
            x = x.to_sparse_csr()
        h = torch.relu(self.norm(x @ self.weight + self.bias))
        return self.encoder(h, *cat_list)
