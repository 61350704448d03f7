"""Native K-quant kernels (Q2_K..Q6_K x AK activations), both tiers, against the PyTorch references.

Two references (moestream.kernels.reference):
* `matmul_act_quantized` rounds x through the AK format exactly as the kernel does, so the native result must
  agree with it to float rounding: |native - ref| <= 1e-5 * (|W| @ |xq|) per output (the integer parts of the
  kernel are exact; only the per-block float scaling and the final sums round).
* `matmul` is the exact float product. AK quantization (per 256-block, scale s = |peak| / 128 with peak the
  signed value of largest magnitude, q = round(x / s) clamped to [-128, 127]) moves each x_i by at most s / 2,
  except values within half a step of -peak, which round to 128 and are clamped to 127: those move by at most
  s. So per output |native - exact| <= sum_i |w_i| * e_i with e_i = s/2 (or s when |x_i| / s > 127.5), plus
  the same float slack.

The generic tier is checked in a subprocess with MOESTREAM_KERNEL_TIER=generic (the tier is fixed at import).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from moestream.formats.weight import QuantWeight
from moestream.kernels import cpu, reference

K_TYPES = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
# Byte offsets of the fp16 fields inside one block, from the block structs in ggml-common.h.
FP16_FIELDS = {Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}
# (K, N, T): K in {256, 512, 4096}, odd N, T in {1, 3, 17, 64}
SHAPES = [(256, 1, 1), (256, 33, 3), (512, 3, 17), (512, 17, 64), (4096, 1, 3), (4096, 17, 1), (4096, 33, 64),
          (4096, 3, 17)]
ROOT = Path(__file__).resolve().parents[2]
REL = 1e-5

# No skip when the extension is missing: an unbuilt extension must fail these tests, not hide behind a skip.


def _weight(rng: np.random.Generator, qtype: Q, n: int, k: int, fill: int | None = None) -> QuantWeight:
    """Random (or constant `fill`) block bytes with the fp16 scale fields set to small finite values."""
    block, size = GGML_QUANT_SIZES[qtype]
    shape = (n * (k // block), size)
    raw = np.full(shape, fill, np.uint8) if fill is not None else rng.integers(0, 256, shape, dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        raw[:, off:off + 2] = rng.uniform(-3.0, 3.0, shape[0]).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return QuantWeight(torch.from_numpy(raw.reshape(n, -1).copy()), qtype, (n, k))


def _acts(rng: np.random.Generator, t: int, k: int) -> torch.Tensor:
    x = rng.standard_normal((t, k)).astype(np.float32)
    x *= rng.uniform(0.01, 10.0, (t, k // 256, 1)).repeat(256, axis=1).reshape(t, k).astype(np.float32)
    if t >= 3:
        x[1, :256] = 0.0  # an all-zero activation block (scale 0)
        x[2, :2] = [-4 * np.abs(x[2]).max(), 4 * np.abs(x[2]).max()]  # peak -m and a value at +m: clamped to 127
    return torch.from_numpy(x)


def _native(x: torch.Tensor, w: QuantWeight, n_threads: int = 1) -> torch.Tensor:
    """The native matmul into a NaN-poisoned output (every element must be written)."""
    x = x.contiguous()
    y = torch.full((x.shape[0], w.shape[0]), float("nan"), dtype=torch.float32)
    cpu._native.matmul(int(w.qtype), cpu.data_ptr(w.raw), w.shape[0], w.shape[1], x.data_ptr(), x.shape[0],
                       y.data_ptr(), n_threads)
    assert not torch.isnan(y).any(), "output not fully written"
    return y


def _act_error_bound(x: torch.Tensor) -> torch.Tensor:
    """Per element bound on |x - AK-quantized x| (see the module docstring)."""
    xb = x.reshape(x.shape[0], -1, 256)
    step = xb.abs().amax(-1, keepdim=True) / 128.0
    clamped = xb.abs() > 127.5 * step
    return (step * torch.where(clamped, 1.0, 0.5)).reshape(x.shape)


def check(x: torch.Tensor, w: QuantWeight, n_threads: int = 1) -> None:
    got = _native(x, w, n_threads)
    dense = w.dense()
    assert torch.isfinite(dense).all()
    xq = reference.quantize_activations(x, w.qtype)
    slack = REL * (xq.abs() @ dense.abs().T + x.abs() @ dense.abs().T) + 1e-30
    # vs the activation-quantized reference: float rounding only
    err_q = (got - xq @ dense.T).abs()
    assert (err_q <= slack).all(), f"{w.qtype.name} {tuple(w.shape)} T={x.shape[0]}: max rel err " \
        f"{(err_q / slack).max().item() * REL:.3g}"
    # vs the exact product: within the activation-quantization bound
    err = (got - reference.matmul(x, w)).abs()
    bound = _act_error_bound(x) @ dense.abs().T + slack
    assert (err <= bound).all(), f"{w.qtype.name}: exceeds the activation-quantization bound"


def run_all(expected_tier: str) -> int:
    """Every type x shape (plus the saturation cases) on whichever tier this process loaded."""
    table = cpu.kernel_table()
    n = 0
    for qtype in K_TYPES:
        assert table[int(qtype)] == (expected_tier, 2), (qtype.name, table[int(qtype)])  # ACT_AK = 2
        for k, n_rows, t in SHAPES:
            rng = np.random.default_rng([int(qtype), k, n_rows, t])
            check(_acts(rng, t, k), _weight(rng, qtype, n_rows, k))
            n += 1
        n += check_extremes(qtype)
    return n


def check_extremes(qtype: Q) -> int:
    """Constant weight bytes (all codes / scales at their extremes) against activations that are all -128, or
    all +127 but one: the largest integer partial sums the kernels can see (int16 saturation, int32 overflow)."""
    rng = np.random.default_rng(int(qtype))
    k = 512
    neg = -torch.ones(1, k)
    pos = torch.ones(1, k)
    pos[0, ::256] = -1.0  # peak -1 first in each block: the +1s map to 128 -> clamped 127
    x = torch.cat([neg, pos, -neg])
    for fill in (0x00, 0xFF, 0x80, 0x7F, 0xAA, 0x55):
        check(x, _weight(rng, qtype, 3, k, fill))
    return 6


def _cpu_has_avx2_fma() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("k,n,t", SHAPES)
def test_default_tier(qtype: Q, k: int, n: int, t: int) -> None:
    rng = np.random.default_rng([int(qtype), k, n, t])
    check(_acts(rng, t, k), _weight(rng, qtype, n, k))


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_default_tier_extremes(qtype: Q) -> None:
    check_extremes(qtype)


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_threads_and_wrapper(qtype: Q) -> None:
    rng = np.random.default_rng(99)
    x, w = _acts(rng, 5, 512), _weight(rng, qtype, 37, 512)
    one = _native(x, w, 1)
    torch.testing.assert_close(_native(x, w, 2), one, rtol=0, atol=0)
    torch.testing.assert_close(cpu.matmul(x, w, 2), one, rtol=0, atol=0)


@pytest.mark.skipif(not _cpu_has_avx2_fma(), reason="CPU without AVX2+FMA")
@pytest.mark.skipif(bool(os.environ.get("MOESTREAM_KERNEL_TIER")), reason="tier forced by the environment")
def test_avx2_tier_selected() -> None:
    table = cpu.kernel_table()
    for qtype in K_TYPES:
        assert table[int(qtype)] == ("avx2", 2), qtype.name


def test_generic_tier_in_subprocess() -> None:
    env = {**os.environ, "MOESTREAM_KERNEL_TIER": "generic"}
    code = "from tests.kernels.test_kquant_kernels import run_all; print('checked', run_all('generic'))"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"checked {len(K_TYPES) * (len(SHAPES) + 6)}" in res.stdout
