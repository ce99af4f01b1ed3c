"""Per-layer weight generators G_l: Linear → reshape (H, k, k) → conv3x3 → LeakyReLU → 1×1 conv.

Layers are grouped by kernel size ``k`` (3 for 3×3 convolutions, 1 for 1×1 convolutions and vectors) so
that a group's parameters are stacked tensors and the hot path can run a group in one launch.

With ``rank`` > 0 the weight matrices come instead from :class:`LowRankGenerators`: a product of two generated
factors of that rank, whose output projections are ~(rows + columns) · rank instead of rows · columns wide (a
ResNet-18's generators: 47.6 M numbers at hidden 32, 1.0 M at rank 1 and hidden 16).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..targets.base import ParamSpec
from . import hotpath


def kernel_size(spec: ParamSpec) -> int:
    """``k`` of a square 2-D (transposed) convolution kernel; 1 for anything else (its generator's output is
    then the parameter flattened into ``[numel, 1, 1]``)."""
    square_2d = len(spec.shape) == 4 and spec.shape[2] == spec.shape[3]
    return spec.shape[2] if spec.kind in ("conv", "conv_transpose") and square_2d else 1


def rows(spec: ParamSpec) -> int:
    """Output channels of the generator's last 1×1 convolution: the parameter reshaped to ``[rows, k, k]``."""
    k = kernel_size(spec)
    return spec.numel // (k * k)


class GeneratorGroup(nn.Module):
    """The generators of all layers sharing kernel size ``k``."""

    def __init__(self, specs: list[ParamSpec], k: int, embedding_dim: int, hidden: int):
        super().__init__()
        count = len(specs)
        self.k, self.hidden = k, hidden
        self.lin_w = nn.Parameter(torch.randn(count, embedding_dim, hidden * k * k) / math.sqrt(embedding_dim))
        self.lin_b = nn.Parameter(torch.zeros(count, hidden * k * k))
        self.conv_w = nn.Parameter(torch.randn(count, hidden, hidden, 3, 3) * math.sqrt(2.0 / (hidden * 9)))
        self.conv_b = nn.Parameter(torch.zeros(count, hidden))
        self.out_w = nn.ParameterList(
            nn.Parameter(torch.randn(rows(s), hidden) * self._out_std(s, hidden)) for s in specs
        )
        self.out_b = nn.ParameterList(nn.Parameter(torch.zeros(rows(s))) for s in specs)

    @staticmethod
    def _out_std(spec: ParamSpec, hidden: int) -> float:
        # Matrices are standardised after generation; vectors (BatchNorm) start as small offsets.
        return (1.0 if spec.is_matrix else 0.05) / math.sqrt(hidden)

    def forward(self, codes: Tensor) -> list[Tensor]:
        """``codes`` [B, L_group, E] → raw outputs ``[B, rows_l, k, k]`` per layer."""
        out_w, out_b = self._output_projections(codes)
        return hotpath.generate(codes, self.lin_w, self.lin_b, self.conv_w, self.conv_b, out_w, out_b, self.k)

    def _output_projections(self, codes: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The output projections, as low-precision copies kept between calls under autocast without grad (where
        the hot path computes in autocast's dtype: on CPU; the CUDA kernels read float32).

        They hold ~3.5× as many numbers as the weights they generate (40 M for a ResNet-18): read in float32
        they made the output projection ~4× slower, and casting them anew on every prediction cost as much.
        """
        device = codes.device.type
        tensors = [*self.out_w, *self.out_b]
        autocast = torch.is_autocast_enabled(device) and hotpath.computes_in_autocast_dtype(device)
        if torch.is_grad_enabled() or not autocast:
            cast = tensors
        else:
            dtype = torch.get_autocast_dtype(device)
            key = (dtype, *((t.data_ptr(), t._version) for t in tensors))
            if getattr(self, "_cast_key", None) != key:
                self._cast, self._cast_key = [t.detach().to(dtype) for t in tensors], key
            cast = self._cast
        return cast[: len(self.out_w)], cast[len(self.out_w):]


class LowRankGenerators(nn.Module):
    """Rank-``rank`` weight matrices: per layer, code → Linear → LayerNorm → LeakyReLU → factors ``U``
    [rows, rank] and ``V`` [rank, columns]; the raw matrix is ``U V`` (rows = output channels, columns = the rest
    of the shape), standardised afterwards like every generated matrix."""

    def __init__(self, specs: list[ParamSpec], embedding_dim: int, hidden: int, rank: int):
        super().__init__()
        self.rank = rank
        self.sizes = [(s.shape[0], s.numel // s.shape[0]) for s in specs]
        self.lin_w = nn.Parameter(torch.randn(len(specs), embedding_dim, hidden) / math.sqrt(embedding_dim))
        self.lin_b = nn.Parameter(torch.zeros(len(specs), hidden))
        self.out_w = nn.ParameterList(
            nn.Parameter(torch.randn((r + c) * rank, hidden) / math.sqrt(hidden)) for r, c in self.sizes
        )
        self.out_b = nn.ParameterList(nn.Parameter(torch.zeros((r + c) * rank)) for r, c in self.sizes)

    def forward(self, codes: Tensor) -> list[Tensor]:
        """``codes`` [B, L_matrices, E] → raw matrices ``[B, rows_l, columns_l]`` per layer."""
        # normalised so that the factors, and their product, are O(1) however small the codes are: the
        # standardisation that follows divides by the product's spread
        hidden = torch.einsum("ble,leh->blh", codes, self.lin_w) + self.lin_b
        hidden = F.leaky_relu(F.layer_norm(hidden, hidden.shape[-1:]), 0.2)
        raws = []
        for i, (rows_, columns) in enumerate(self.sizes):
            factors = F.linear(hidden[:, i], self.out_w[i], self.out_b[i])
            u = factors[:, : rows_ * self.rank].view(-1, rows_, self.rank)
            v = factors[:, rows_ * self.rank:].view(-1, self.rank, columns)
            raws.append(torch.bmm(u, v))
        return raws


class WeightGenerators(nn.Module):
    """All generators of a target; maps per-layer codes to parameters of the exact shapes. ``rank`` > 0 makes
    the weight matrices low-rank (:class:`LowRankGenerators`); vectors keep their generator group."""

    def __init__(self, specs: list[ParamSpec], embedding_dim: int, hidden: int, rank: int = 0):
        super().__init__()
        self.specs = specs
        self.low_rank_layers = [i for i, s in enumerate(specs) if rank and s.is_matrix]
        self.low_rank = LowRankGenerators([specs[i] for i in self.low_rank_layers], embedding_dim, hidden, rank) \
            if self.low_rank_layers else None
        grouped = [i for i in range(len(specs)) if i not in self.low_rank_layers]
        sizes = sorted({kernel_size(specs[i]) for i in grouped}, reverse=True)
        self.group_layers = {k: [i for i in grouped if kernel_size(specs[i]) == k] for k in sizes}
        self.groups = nn.ModuleDict(
            {f"k{k}": GeneratorGroup([specs[i] for i in idx], k, embedding_dim, hidden)
             for k, idx in self.group_layers.items()}
        )

    def forward(self, codes: Tensor) -> list[Tensor]:
        """``codes`` [B, L, E] (one per spec, in order) → raw tensors ``[B, *spec.shape]`` in spec order."""
        raws: list[Tensor | None] = [None] * len(self.specs)
        parts = [(self.groups[f"k{k}"], ids) for k, ids in self.group_layers.items()]
        if self.low_rank is not None:
            parts.append((self.low_rank, self.low_rank_layers))
        for generator, layer_ids in parts:
            index = torch.tensor(layer_ids, device=codes.device)
            for i, raw in zip(layer_ids, generator(codes.index_select(1, index))):
                raws[i] = raw.reshape(raw.shape[0], *self.specs[i].shape)
        return raws
