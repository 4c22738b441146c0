"""MobileViT building blocks.

State-dict key names and shapes follow https://github.com/wilile26811249/MobileViT (the implementation whose
``model_best.pth.tar`` / ``qat_checkpoint.pth.tar`` checkpoints users of the original project hold), so those
checkpoints load unchanged.  The code is written export-friendly: the same math, but reshapes use ``-1`` for the
batch dimension (no batch-size arithmetic in the graph) and no einops.

Two transformer flavours share one parameter layout:

* base (``opt=False``): the reference forward, attention with the ``b p n (h d) -> b p h n d`` rearranges
  (exported as Reshape/Transpose), all matmuls 4-D.
* optimized (``opt=True``): no rearranges in the attention block; the transformer runs on a 2-D ``[B*P*N, D]``
  token matrix (LayerNorm, the QKV/output projections and the FFN are 2-D matmuls) and only the attention core
  uses 3-D ``[B*P, N, .]`` batched matmuls.
"""
from typing import Callable, Optional

import torch
import torch.nn as nn


class ConvNormAct(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, groups=1,
                 norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
                 activation_layer: Optional[Callable[..., nn.Module]] = nn.SiLU, dilation=1):
        super(ConvNormAct, self).__init__()
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              dilation=dilation, groups=groups, bias=norm_layer is None)
        self.norm_layer = nn.BatchNorm2d(out_channels) if norm_layer is None else norm_layer(out_channels)
        self.act = activation_layer() if activation_layer is not None else None

    def forward(self, x):
        x = self.conv(x)
        x = self.norm_layer(x)
        if self.act is not None:
            x = self.act(x)
        return x


class PreNorm(nn.Module):
    def __init__(self, dim, fn):
        super(PreNorm, self).__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x))


class FFN(nn.Module):
    def __init__(self, dim, hidden_dim, dropout=0.0):
        super(FFN, self).__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


class MultiHeadSelfAttention(nn.Module):
    """softmax(Q K^T * scale) V with ``scale = dim ** -0.5`` (dim = token width, as the reference does)."""

    def __init__(self, dim, num_heads=8, dim_head=None, opt=False):
        super(MultiHeadSelfAttention, self).__init__()
        self.num_heads = num_heads
        self.dim_head = int(dim / num_heads) if dim_head is None else dim_head
        self.opt = opt
        inner = self.num_heads * self.dim_head
        self.to_qvk = nn.Linear(dim, inner * 3, bias=False)
        self.scale_factor = dim ** -0.5
        self.w_out = nn.Linear(inner, dim, bias=False)

    def attend(self, q, k, v):
        dots = torch.matmul(q, k.transpose(-1, -2)) * self.scale_factor
        attn = torch.softmax(dots, dim=-1)
        return torch.matmul(attn, v)

    def forward(self, x):
        if self.opt:
            raise RuntimeError("the optimized attention is driven by OptTransformer")
        # x: [b, p, n, dim]
        h, d = self.num_heads, self.dim_head
        p, n = x.shape[1], x.shape[2]
        q, k, v = self.to_qvk(x).chunk(3, dim=-1)
        # rearrange 'b p n (h d) -> b p h n d'
        q, k, v = [t.reshape(-1, p, n, h, d).permute(0, 1, 3, 2, 4) for t in (q, k, v)]
        out = self.attend(q, k, v)
        # rearrange 'b p h n d -> b p n (h d)'
        out = out.permute(0, 1, 3, 2, 4).reshape(-1, p, n, h * d)
        return self.w_out(out)


class Transformer(nn.Module):
    """Reference transformer on ``[b, p, n, d]`` tokens: ``x = attn(LN(x)) + x; x = ffn(LN(x)) + x``."""

    def __init__(self, dim, depth, heads, dim_head, mlp_dim, dropout=0.1):
        super(Transformer, self).__init__()
        self.layers = nn.ModuleList([])
        for _ in range(depth):
            self.layers.append(nn.ModuleList([
                PreNorm(dim, MultiHeadSelfAttention(dim, heads, dim_head)),
                PreNorm(dim, FFN(dim, mlp_dim, dropout)),
            ]))

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class OptTransformer(Transformer):
    """Same parameters as :class:`Transformer`; 2-D matmuls, attention without rearranges."""

    def __init__(self, dim, depth, heads, dim_head, mlp_dim, dropout=0.1):
        super(OptTransformer, self).__init__(dim, depth, heads, dim_head, mlp_dim, dropout)
        self.dim = dim
        for attn, _ in self.layers:
            attn.fn.opt = True

    def _attention(self, prenorm, x2d, n):
        mhsa = prenorm.fn
        h, d = mhsa.num_heads, mhsa.dim_head
        qkv = mhsa.to_qvk(prenorm.norm(x2d))              # 2-D [T, 3*h*d]
        qkv = qkv.reshape(-1, n, 3 * h * d)                # 3-D [b*p, n, 3*h*d]
        q, k, v = qkv.chunk(3, dim=-1)
        if h == 1:
            out = mhsa.attend(q, k, v)                     # [b*p, n, d]
        else:
            q, k, v = [t.reshape(-1, n, h, d).transpose(1, 2) for t in (q, k, v)]
            out = mhsa.attend(q, k, v).transpose(1, 2)
        return mhsa.w_out(out.reshape(-1, h * d))          # 2-D [T, dim]

    def forward(self, x):
        p, n = x.shape[1], x.shape[2]
        x = x.reshape(-1, self.dim)                        # 4-D -> 2-D token matrix
        for attn, ff in self.layers:
            x = self._attention(attn, x, n) + x
            x = ff(x) + x
        return x.reshape(-1, p, n, self.dim)               # back to 4-D


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual block."""

    def __init__(self, in_channels, out_channels, stride=1, expand_ratio=2, act_layer=nn.SiLU):
        super(InvertedResidual, self).__init__()
        self.stride = stride
        self.use_res_connect = self.stride == 1 and in_channels == out_channels
        hidden_dim = int(round(in_channels * expand_ratio))
        layers = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_channels, hidden_dim, kernel_size=1, activation_layer=None))
        layers.append(ConvNormAct(hidden_dim, hidden_dim, kernel_size=3, stride=stride, padding=1,
                                  groups=hidden_dim, activation_layer=act_layer))
        layers.append(nn.Conv2d(hidden_dim, out_channels, kernel_size=1, stride=1, bias=False))
        layers.append(nn.BatchNorm2d(out_channels))
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileVitBlock(nn.Module):
    def __init__(self, in_channels, out_channels, d_model, layers, mlp_dim, opt=False):
        super(MobileVitBlock, self).__init__()
        self.local_representation = nn.Sequential(
            ConvNormAct(in_channels, in_channels, 3),
            ConvNormAct(in_channels, d_model, 1),
        )
        transformer_cls = OptTransformer if opt else Transformer
        self.transformer = transformer_cls(d_model, layers, 1, 32, mlp_dim, 0.1)
        self.fusion_block1 = nn.Conv2d(d_model, in_channels, kernel_size=1)
        self.fusion_block2 = nn.Conv2d(in_channels * 2, out_channels, 3, padding=1)
        self.d_model = d_model

    def forward(self, x):
        local_repr = self.local_representation(x)
        d = self.d_model
        hh, ww = local_repr.shape[2] // 2, local_repr.shape[3] // 2
        # unfold 2x2 patches: 'b d (h ph) (w pw) -> b (ph pw) (h w) d'
        g = local_repr.reshape(-1, d, hh, 2, ww, 2).permute(0, 3, 5, 2, 4, 1).reshape(-1, 4, hh * ww, d)
        g = self.transformer(g)
        # fold: 'b (ph pw) (h w) d -> b d (h ph) (w pw)'
        g = g.reshape(-1, 2, 2, hh, ww, d).permute(0, 5, 3, 1, 4, 2).reshape(-1, d, hh * 2, ww * 2)
        fuse_repr = self.fusion_block1(g)
        return self.fusion_block2(torch.cat([x, fuse_repr], dim=1))
