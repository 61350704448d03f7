"""Quantized tiny models against transformers: teacher-forced top-1 agreement over 64 positions (issue 15).

For each architecture of tests/fixtures/tiny_models.py it takes a wider variant of the tiny config (every width
that is a row of some matrix set to 256, so that Q4_K's 256-value blocks fit where the architecture allows; the
64-wide test models make llama-quantize fall back from K-quants), converts it with llama.cpp's converter to F32
and Q8_0, makes Q4_K_M from the F32 file with `llama-quantize`, and compares each file's argmax at every
position of the prompt + transformers' own greedy continuation (64 positions in all) with transformers' F32
argmax. Also reported: the share of weight bytes llama-quantize actually stored as a K type.

    PYTHONPATH=. python bench/quant_agreement.py --llama-bin /root/cache/llama-build-avx2/bin [--arch ARCH ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moestream.formats.gguf import GGUFFile  # noqa: E402
from tests.fixtures import tiny_models  # noqa: E402
from tests.models.test_hf_parity import PROMPT, hf_greedy, our_logits  # noqa: E402

WIDE = 256
WIDTH_KEYS = ("hidden_size", "intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size",
              "kv_lora_rank", "q_lora_rank")
K_TYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


def wide_variant(arch: str) -> str:
    """Register `ARCH-wide` in tiny_models.VARIANTS (widths at 256) and return its name."""
    cls, kwargs, tok = tiny_models.CONFIGS[arch]
    wide = {k: (WIDE if k in WIDTH_KEYS and v else v) for k, v in kwargs.items()}
    name = f"{arch}-wide"
    tiny_models.VARIANTS[name] = (cls, wide, tok)
    return name


def quantize(bin_dir: Path, src: Path, qtype: str) -> Path | str:
    """The quantized file, or llama-quantize's reason for refusing."""
    dst = src.with_name(f"model-{qtype.lower()}.gguf")
    if not dst.exists():
        tmp = dst.with_suffix(".tmp")
        done = subprocess.run([str(bin_dir / "llama-quantize"), str(src), str(tmp), qtype, "2"], capture_output=True,
                              text=True)
        if done.returncode:
            return next((line for line in done.stderr.splitlines() if "failed to quantize:" in line), "failed")
        tmp.rename(dst)
    return dst


def k_share(path: Path) -> float:
    """Share of the 2-D+ weight bytes stored as a K type."""
    tensors = [t for t in GGUFFile(path).tensors.values() if len(t.shape) >= 2]
    total = sum(t.nbytes for t in tensors)
    return sum(t.nbytes for t in tensors if t.qtype.name in K_TYPES) / total


@torch.no_grad()
def agreement(arch: str, bin_dir: Path) -> dict:
    name = wide_variant(arch)
    hf = tiny_models.load_hf_model(name)
    tokens = PROMPT + hf_greedy(hf, PROMPT, 64 + 1 - len(PROMPT))  # the last 64 positions predict tokens 2..65
    ref = hf(torch.tensor([tokens])).logits[0].argmax(-1)[-64:]
    files = {"f32": tiny_models.gguf_path(name, "f32"), "q8_0": tiny_models.gguf_path(name, "q8_0")}
    q4k = quantize(bin_dir, files["f32"], "Q4_K_M")
    row = {"arch": arch, "q4_k_m": None, "q4_k_share": None, "note": ""}
    if isinstance(q4k, Path):
        files["q4_k_m"] = q4k
        row["q4_k_share"] = k_share(q4k)
    else:
        row["note"] = "llama-quantize: " + q4k.strip()
    for label, path in files.items():
        ours = our_logits(path, tokens).argmax(-1)[-64:]
        row[label] = (ours == ref).float().mean().item()
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-bin", type=Path, required=True)
    ap.add_argument("--arch", action="append", help="default: every architecture of the parity runner")
    args = ap.parse_args()
    print(f"{'arch':<14} {'F32':>6} {'Q8_0':>6} {'Q4_K_M':>7} {'K share':>8}")
    for arch in args.arch or sorted(tiny_models.CONFIGS):
        r = agreement(arch, args.llama_bin)
        q4k = "-" if r["q4_k_m"] is None else f"{r['q4_k_m']:.1%}"
        share = "-" if r["q4_k_share"] is None else f"{r['q4_k_share']:.0%}"
        print(f"{arch:<14} {r['f32']:>6.1%} {r['q8_0']:>6.1%} {q4k:>7} {share:>8} {r['note']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
