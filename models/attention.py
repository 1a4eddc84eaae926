"""LoFTR-style linear-attention transformer used by CREStereo at 1/16 resolution."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def linear_attention(queries: Tensor, keys: Tensor, values: Tensor, eps: float = 1e-6) -> Tensor:
    """Linear attention with the elu + 1 feature map; inputs and output are (B, tokens, heads, head_dim).

    Values are divided by the number of tokens before the sum and multiplied back after it, as in LoFTR,
    which keeps half-precision sums in range.
    """
    q = F.elu(queries) + 1
    k = F.elu(keys) + 1
    length = values.shape[1]
    kv = torch.einsum("bshd,bshv->bhdv", k, values / length)
    z = 1 / (torch.einsum("blhd,bhd->blh", q, k.sum(dim=1)) + eps)
    return torch.einsum("blhd,bhdv,blh->blhv", q, kv, z) * length


class TransformerLayer(nn.Module):
    """One attention layer: projections, linear attention, merge + LayerNorm, FFN on [x, message] + LayerNorm."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query_proj = nn.Linear(dim, dim, bias=False)
        self.key_proj = nn.Linear(dim, dim, bias=False)
        self.value_proj = nn.Linear(dim, dim, bias=False)
        self.merge = nn.Linear(dim, dim, bias=False)
        self.ffn = nn.Sequential(
            nn.Linear(2 * dim, 2 * dim, bias=False), nn.ReLU(), nn.Linear(2 * dim, dim, bias=False)
        )
        self.attention_norm = nn.LayerNorm(dim)
        self.ffn_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, source: Tensor) -> Tensor:
        """Update tokens `x` (B, N, C) with a message gathered from `source` (B, M, C)."""
        b = x.shape[0]
        q = self.query_proj(x).view(b, x.shape[1], self.num_heads, -1)
        k = self.key_proj(source).view(b, source.shape[1], self.num_heads, -1)
        v = self.value_proj(source).view(b, source.shape[1], self.num_heads, -1)
        message = linear_attention(q, k, v).reshape(b, x.shape[1], -1)
        message = self.attention_norm(self.merge(message))
        message = self.ffn_norm(self.ffn(torch.cat([x, message], dim=2)))
        return x + message


class FeatureTransformer(nn.Module):
    """Stack of layers applied to a (left, right) token pair.

    "self": each side attends to itself. "cross": the left side attends to the right, then the right side
    attends to the already updated left side.
    """

    def __init__(self, dim: int, num_heads: int, layer_types: tuple[str, ...]) -> None:
        super().__init__()
        self.layer_types = layer_types
        self.layers = nn.ModuleList(TransformerLayer(dim, num_heads) for _ in layer_types)

    def forward(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        for layer, kind in zip(self.layers, self.layer_types):
            if kind == "self":
                left, right = layer(left, left), layer(right, right)
            else:
                left = layer(left, right)
                right = layer(right, left)
        return left, right
