"""Pure-PyTorch references with the same signatures as the native kernels.

`matmul` is the exact float product. `matmul_act_quantized` first rounds the activations the way the native
kernels (and llama.cpp) do (A32: blocks of 32, scale amax/127 kept as fp16, codes rounded half away from zero;
AK: blocks of 256, scale -max/128 as ggml's Q8_K), so a native
result must match it to float rounding; against `matmul` the gap is bounded by the activation quantization
error (see ACT_ERROR_BOUND in the tests). Special blocks follow the native rules (csrc/act_quant.c): one holding
NaN or inf comes out all NaN, one whose scale is 0 in its stored format (zeros, subnormals) all 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as Q

from ..formats.weight import ExpertWeights, QuantWeight

FLOAT_TYPES = {Q.F32, Q.F16, Q.BF16}
K_TYPES = {Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K}


def matmul(x: torch.Tensor, w: QuantWeight) -> torch.Tensor:
    # x: [T, K] float32, w: [N, K] -> [T, N]
    return x @ w.dense().T


def matmul_heads(x: torch.Tensor, w: QuantWeight, n_heads: int, act_quantized: bool = False) -> torch.Tensor:
    # x: [T, H, K], w: [H N, K] (H matrices [N, K]) -> [T, H, N]
    dense = w.dense().view(n_heads, -1, w.shape[1])  # [H, N, K]
    x = quantize_activations(x, w.qtype) if act_quantized and x.numel() else x
    return torch.einsum("thk,hnk->thn", x, dense)


def quantize_activations(x: torch.Tensor, qtype: Q) -> torch.Tensor:
    """x rounded through the activation format the native kernel uses for weights of `qtype`."""
    if qtype in FLOAT_TYPES:
        return x
    block = 256 if qtype in K_TYPES else 32
    xb = x.reshape(*x.shape[:-1], -1, block)
    if qtype in K_TYPES:
        idx = xb.abs().argmax(-1, keepdim=True)
        peak = xb.gather(-1, idx)  # signed value of largest magnitude
        tiny = torch.isfinite(peak) & ~torch.isfinite(-128.0 / peak)  # 0, or 1/scale overflows: a zero block
        iscale = torch.where(tiny, torch.zeros_like(peak), -128.0 / peak)
        q = torch.round(xb * iscale).clamp(max=127)
        scale = torch.where(tiny, torch.zeros_like(peak), 1.0 / iscale)
    else:
        # as llama.cpp's Q8_0: codes from the fp32 scale, rounded half away from zero; the scale kept as fp16
        scale32 = xb.abs().amax(-1, keepdim=True) / 127.0
        scale = scale32.half().float()
        inv = torch.where(scale == 0, torch.zeros_like(scale32), 1.0 / scale32)  # fp16 scale 0: a zero block
        v = xb * inv
        q = torch.sign(v) * torch.floor(v.abs() + 0.5)
    return (q * scale).reshape(x.shape)


def matmul_act_quantized(x: torch.Tensor, w: QuantWeight) -> torch.Tensor:
    return quantize_activations(x, w.qtype) @ w.dense().T


def moe_ffn(x: torch.Tensor, experts: list[ExpertWeights], tokens: list[torch.Tensor],
            weights: list[torch.Tensor], act_quantized: bool = False) -> torch.Tensor:
    """out[t] = sum over experts e routed to t of weight(e, t) * down(silu(gate(x_t)) * up(x_t)).
    act_quantized: round x and the hidden activations as the native kernel does."""
    mm = matmul_act_quantized if act_quantized else matmul
    out = torch.zeros_like(x)
    for w, rows, wt in zip(experts, tokens, weights):
        xe = x[rows]
        y = mm(F.silu(mm(xe, w.gate)) * mm(xe, w.up), w.down)
        out.index_add_(0, rows, y * wt[:, None])
    return out
