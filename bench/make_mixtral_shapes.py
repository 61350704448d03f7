"""Write a random-weight GGUF with the real Mixtral-8x7B architecture and tensor shapes, for benchmarks.

Architecture `llama` as llama.cpp's converter writes Mixtral: 32 layers, d_model 4096, 32 heads, 8 KV heads,
head_dim 128, 8 experts (top-2) of FFN width 14336 stored merged as `blk.N.ffn_{gate,up,down}_exps.weight`,
vocab 32000, context 32768, rope base 1e6, RMS eps 1e-5. The router (`ffn_gate_inp`) and the norms are F32;
token_embd, output, attention and experts use the chosen quant type (Q4_0 or Q8_0). Tokenizer metadata is
copied from llama.cpp's `models/ggml-vocab-llama-spm.gguf` (the real 32000-token SentencePiece vocabulary).

Quantized weights are written directly as random blocks (never quantized from floats): random quants and a
per-block fp16 scale of fixed magnitude and random sign, so every weight is zero-mean with standard deviation
1/sqrt(fan_in) and matmul outputs stay O(1). Tensors are streamed to disk in chunks (bounded memory).
A full 32-layer Q4_0 file is about 26 GB (Q8_0 about 49 GB); `--layers 2` gives about 1.8 GB.

Reproduce (2-layer file used for checks; the vocab file comes from the test fixtures' llama.cpp cache):
    PYTHONPATH=. python bench/make_mixtral_shapes.py -o /root/cache/bench/mixtral-shapes-2l-q4_0.gguf \\
        --qtype q4_0 --layers 2
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from tqdm import tqdm

ARCH = "llama"
QTYPES = {"q4_0": GGMLQuantizationType.Q4_0, "q8_0": GGMLQuantizationType.Q8_0}
FILE_TYPES = {
    GGMLQuantizationType.Q4_0: LlamaFileType.MOSTLY_Q4_0,
    GGMLQuantizationType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
}
# E[q^2] of one quant value, with q uniform over the codes: Q4_0 codes are nibble - 8 in [-8, 7],
# Q8_0 codes are int8 in [-128, 127]. Used to turn a target weight std into a block scale.
CODE_MEAN_SQUARE = {GGMLQuantizationType.Q4_0: 21.5, GGMLQuantizationType.Q8_0: 5461.5}
CHUNK_BLOCKS = 1 << 21  # blocks generated and written at a time (36 MiB of Q4_0, 68 MiB of Q8_0)


@dataclass(frozen=True)
class Shapes:
    n_layers: int = 32
    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int = 8
    head_dim: int = 128
    n_experts: int = 8
    n_experts_used: int = 2
    ff_expert: int = 14336
    vocab: int = 32000
    context: int = 32768
    rope_base: float = 1e6
    rms_eps: float = 1e-5


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # row-major (torch order): the last dimension is the row
    qtype: GGMLQuantizationType

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        return self.n_elements // block * type_size

    @property
    def fan_in(self) -> int:
        return self.shape[-1]


def tensor_plan(s: Shapes, q: GGMLQuantizationType) -> list[TensorSpec]:
    """All tensors of the model in file order."""
    f32 = GGMLQuantizationType.F32
    d, kv = s.d_model, s.n_kv_heads * s.head_dim
    plan = [TensorSpec("token_embd.weight", (s.vocab, d), q)]
    for i in range(s.n_layers):
        b = f"blk.{i}."
        plan += [
            TensorSpec(b + "attn_norm.weight", (d,), f32),
            TensorSpec(b + "attn_q.weight", (s.n_heads * s.head_dim, d), q),
            TensorSpec(b + "attn_k.weight", (kv, d), q),
            TensorSpec(b + "attn_v.weight", (kv, d), q),
            TensorSpec(b + "attn_output.weight", (d, s.n_heads * s.head_dim), q),
            TensorSpec(b + "ffn_norm.weight", (d,), f32),
            TensorSpec(b + "ffn_gate_inp.weight", (s.n_experts, d), f32),
            TensorSpec(b + "ffn_gate_exps.weight", (s.n_experts, s.ff_expert, d), q),
            TensorSpec(b + "ffn_up_exps.weight", (s.n_experts, s.ff_expert, d), q),
            TensorSpec(b + "ffn_down_exps.weight", (s.n_experts, d, s.ff_expert), q),
        ]
    plan += [TensorSpec("output_norm.weight", (d,), f32), TensorSpec("output.weight", (s.vocab, d), q)]
    return plan


def add_model_metadata(w: GGUFWriter, s: Shapes, q: GGMLQuantizationType) -> None:
    w.add_name(f"Mixtral-8x7B shapes (random {q.name}, {s.n_layers} layers)")
    w.add_block_count(s.n_layers)
    w.add_context_length(s.context)
    w.add_embedding_length(s.d_model)
    w.add_feed_forward_length(s.ff_expert)
    w.add_head_count(s.n_heads)
    w.add_head_count_kv(s.n_kv_heads)
    w.add_rope_dimension_count(s.head_dim)
    w.add_rope_freq_base(s.rope_base)
    w.add_layer_norm_rms_eps(s.rms_eps)
    w.add_expert_count(s.n_experts)
    w.add_expert_used_count(s.n_experts_used)
    w.add_vocab_size(s.vocab)
    w.add_file_type(FILE_TYPES[q])
    w.add_quantization_version(2)


def copy_tokenizer_metadata(w: GGUFWriter, vocab_path: Path) -> int:
    """Copy every `tokenizer.*` key (tokens, scores, types, special ids, model) from a vocab-only GGUF."""
    reader = GGUFReader(vocab_path)
    n_tokens = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        w.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)
        if name == "tokenizer.ggml.tokens":
            n_tokens = len(field.data)
    return n_tokens


def block_scale(qtype: GGMLQuantizationType, fan_in: int) -> float:
    """|d| of every block so that weights have std 1/sqrt(fan_in)."""
    return 1.0 / math.sqrt(fan_in * CODE_MEAN_SQUARE[qtype])


def random_blocks(rng: np.random.Generator, qtype: GGMLQuantizationType, n_blocks: int, scale: float) -> np.ndarray:
    """`n_blocks` Q4_0/Q8_0 blocks of random quants; scale = fp16 `scale` with a random sign per block.
    Both block types start with the fp16 scale d (little-endian), followed by the quants."""
    type_size = GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    d = int(np.array(scale, dtype=np.float16).view(np.uint16))
    blocks[:, 1] = (blocks[:, 1] & 0x80) | (d >> 8)  # keep a random sign bit
    blocks[:, 0] = d & 0xFF
    return blocks


def float_tensor(rng: np.random.Generator, spec: TensorSpec) -> np.ndarray:
    if spec.name.endswith("norm.weight"):
        return np.ones(spec.shape, dtype=np.float32)
    return (rng.standard_normal(spec.shape, dtype=np.float32) / math.sqrt(spec.fan_in)).astype(np.float32)


def write_tensor(fout, rng: np.random.Generator, spec: TensorSpec, bar: tqdm) -> None:
    """Write one tensor's data at the current (already aligned) position, chunk by chunk."""
    if spec.qtype == GGMLQuantizationType.F32:
        fout.write(float_tensor(rng, spec).tobytes())
        bar.update(spec.nbytes)
        return
    n_blocks = spec.n_elements // GGML_QUANT_SIZES[spec.qtype][0]
    scale = block_scale(spec.qtype, spec.fan_in)
    for start in range(0, n_blocks, CHUNK_BLOCKS):
        chunk = random_blocks(rng, spec.qtype, min(CHUNK_BLOCKS, n_blocks - start), scale)
        fout.write(chunk.tobytes())
        bar.update(chunk.nbytes)


def write_gguf(out: Path, shapes: Shapes, qtype: GGMLQuantizationType, vocab_path: Path, seed: int,
               progress: bool = True) -> int:
    """Write the whole file; returns its size in bytes."""
    plan = tensor_plan(shapes, qtype)
    w = GGUFWriter(out, ARCH)
    add_model_metadata(w, shapes, qtype)
    n_tokens = copy_tokenizer_metadata(w, vocab_path)
    if n_tokens != shapes.vocab:
        raise SystemExit(f"{vocab_path} has {n_tokens} tokens, expected {shapes.vocab}")
    for spec in plan:
        w.add_tensor_info(spec.name, spec.shape, np.dtype(np.float32), spec.nbytes, raw_dtype=spec.qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    fout = w.fout[0]
    total = sum(spec.nbytes for spec in plan)
    with tqdm(total=total, unit="B", unit_scale=True, desc=out.name, disable=not progress) as bar:
        for spec in plan:
            w.write_padding(fout, fout.tell())
            write_tensor(fout, rng, spec, bar)
        w.write_padding(fout, fout.tell())
    fout.flush()
    os.fsync(fout.fileno())
    w.close()
    return out.stat().st_size


def default_vocab_path() -> Path:
    """llama.cpp's ggml-vocab-llama-spm.gguf via the test fixtures (fetched once into their cache)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fixtures.llama_cpp import vocab_file

    return vocab_file("llama-spm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, required=True, help="GGUF file to write")
    p.add_argument("--qtype", choices=sorted(QTYPES), default="q4_0", help="type of the big tensors (default q4_0)")
    p.add_argument("--layers", type=int, default=32, help="number of layers (default 32, the real model)")
    p.add_argument("--vocab", type=Path, default=None,
                   help="vocab-only GGUF to copy the tokenizer from (default: ggml-vocab-llama-spm.gguf "
                        "from the test fixtures' llama.cpp cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.layers < 1:
        raise SystemExit("--layers must be >= 1")
    shapes = Shapes(n_layers=args.layers)
    qtype = QTYPES[args.qtype]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    size = write_gguf(args.output, shapes, qtype, args.vocab or default_vocab_path(), args.seed,
                      progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    gb = size / 1e9
    print(f"wrote {args.output}: {gb:.3f} GB in {seconds:.1f} s "
          f"({seconds / gb:.2f} s/GB, {gb / seconds:.3f} GB/s, fsync included)")


if __name__ == "__main__":
    main()
