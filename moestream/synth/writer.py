"""Write a synthetic GGUF: header (metadata + tensor table) built in memory with the `gguf` package's GGUFWriter,
then tensor data streamed chunk by chunk into FILE.tmp, renamed to FILE only once complete and synced.

Memory stays bounded (two chunks of `weights.CHUNK_BYTES`: one being written while the next is generated), and
the exact file size is known before anything is written, so a lack of disk space is reported up front."""

from __future__ import annotations

import io
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gguf import ExpertGatingFuncType, GGMLQuantizationType, GGUFWriter, LlamaFileType, RopeScalingType
from gguf.gguf_writer import WriterState
from tqdm import tqdm

from ..errors import OutputError
from .plan import TensorSpec, aligned, file_size, tensor_plan
from .presets import Preset, Routing
from .vocab import add_vocab
from .weights import chunks

FILE_TYPES = {
    GGMLQuantizationType.Q4_0: LlamaFileType.MOSTLY_Q4_0,
    GGMLQuantizationType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
}
EXPERT_FILE_TYPES = {"mxfp4": LlamaFileType.MOSTLY_MXFP4_MOE}


def write_synth(out: str | os.PathLike[str], preset: Preset, qtype: GGMLQuantizationType, seed: int = 0,
                vocab_file: Path | None = None, progress: bool = True) -> int:
    """Write the whole file; returns its size in bytes. Raises OutputError (missing directory, no space)."""
    out = Path(out)
    plan = tensor_plan(preset, qtype)
    header = build_header(preset, qtype, plan, vocab_file)
    total = file_size(len(header), plan)
    tmp = out.with_name(out.name + ".tmp")
    check_destination(out, tmp, total)
    try:
        _write_file(tmp, header, plan, seed, total, progress)
        os.replace(tmp, out)
    except BaseException as exc:  # interrupted or failed: never leave a partial file behind
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"{out}: write failed: {exc.strerror or exc}") from exc
        raise
    return total


def build_header(p: Preset, qtype: GGMLQuantizationType, plan: list[TensorSpec], vocab_file: Path | None) -> bytes:
    """Magic, metadata and tensor table, exactly as GGUFWriter writes them (offsets follow `plan`'s order)."""
    w = GGUFWriter(None, p.arch)
    add_model_metadata(w, p, qtype)
    add_vocab(w, p, vocab_file)
    for spec in plan:
        # with raw_dtype given, the dtype argument only matters when it is uint8 (a byte shape); it is not
        w.add_tensor_info(spec.name, spec.shape, np.dtype(np.float32), spec.nbytes, raw_dtype=spec.qtype)
    buf = io.BytesIO()
    w.fout, w.state = [buf], WriterState.EMPTY  # serialise into memory instead of opening a file
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    return buf.getvalue()


def add_model_metadata(w: GGUFWriter, p: Preset, qtype: GGMLQuantizationType, name: str | None = None) -> None:
    w.add_name(name or f"{p.title} shapes (random {qtype.name}, {p.n_layers} layers)")
    w.add_block_count(p.n_layers)
    w.add_context_length(p.context)
    w.add_embedding_length(p.d_model)
    w.add_feed_forward_length(p.ff_dense)
    w.add_head_count(p.n_heads)
    w.add_head_count_kv(p.n_kv_heads)
    if p.latent is not None:
        _add_latent(w, p)
    elif p.head_dim * p.n_heads != p.d_model:
        w.add_key_length(p.head_dim)
        w.add_value_length(p.head_dim)
    if p.latent is None:
        w.add_rope_dimension_count(p.rope_dim or p.head_dim)
    w.add_rope_freq_base(p.rope_base)
    if p.yarn is not None:
        _add_yarn(w, p.yarn)
    w.add_layer_norm_rms_eps(p.rms_eps)
    w.add_expert_count(p.n_experts)
    w.add_expert_used_count(p.n_experts_used)
    if p.ff_expert != p.ff_dense or p.oss is not None:  # llama.cpp's gpt-oss loader requires the key
        w.add_expert_feed_forward_length(p.ff_expert)
    if p.oss is not None:
        w.add_sliding_window(p.oss.sliding_window)
    _add_routing(w, p)
    w.add_vocab_size(p.vocab)
    w.add_file_type(EXPERT_FILE_TYPES.get(p.expert_qtype, FILE_TYPES[qtype]))
    w.add_quantization_version(2)


def _add_latent(w: GGUFWriter, p: Preset) -> None:
    """MLA as the converter writes it: the cache's key is latent + rope dims, its value the latent."""
    m = p.latent
    w.add_q_lora_rank(m.q_lora_rank)
    w.add_kv_lora_rank(m.kv_lora_rank)
    w.add_key_length(m.kv_lora_rank + m.rope_dim)
    w.add_value_length(m.kv_lora_rank)
    w.add_key_length_mla(m.nope_dim + m.rope_dim)
    w.add_value_length_mla(m.v_dim)
    w.add_rope_dimension_count(m.rope_dim)


def _add_yarn(w: GGUFWriter, y) -> None:
    w.add_rope_scaling_type(RopeScalingType.YARN)
    w.add_rope_scaling_factor(y.factor)
    w.add_rope_scaling_orig_ctx_len(y.original_context)
    w.add_rope_scaling_yarn_beta_fast(y.beta_fast)
    w.add_rope_scaling_yarn_beta_slow(y.beta_slow)
    if y.log_multiplier:
        w.add_rope_scaling_yarn_log_mul(y.log_multiplier)


def _add_routing(w: GGUFWriter, p: Preset) -> None:
    r = p.routing
    if r == Routing():
        return
    w.add_leading_dense_block_count(r.n_dense_leading)
    w.add_expert_shared_count(r.n_shared)
    w.add_expert_gating_func(ExpertGatingFuncType.SIGMOID if r.gating == "sigmoid" else ExpertGatingFuncType.SOFTMAX)
    w.add_expert_weights_scale(r.weights_scale)
    w.add_expert_weights_norm(r.weights_norm)
    w.add_expert_group_count(r.n_groups)
    w.add_expert_group_used_count(r.groups_used)


def check_destination(out: Path, tmp: Path, total: int) -> None:
    parent = out.parent
    if not parent.is_dir():
        raise OutputError(f"{out}: directory {parent} does not exist")
    if out.is_dir():
        raise OutputError(f"{out}: is a directory")
    reclaimable = tmp.stat().st_size if tmp.is_file() else 0  # left by an interrupted run; truncated on open
    free = shutil.disk_usage(parent).free + reclaimable
    if free < total:
        raise OutputError(f"{out}: needs {total / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB is free on {parent}")


def _write_file(path: Path, header: bytes, plan: list[TensorSpec], seed: int, total: int, progress: bool) -> None:
    # binary units (KiB, MiB, GiB), as the summary line that follows: tqdm's "iB" with 1024 steps reads "1.64GiB"
    bar = tqdm(total=total, unit="iB", unit_scale=True, unit_divisor=1024, desc=path.name.removesuffix(".tmp"),
               disable=not progress)
    with open(path, "wb") as f, bar, ThreadPoolExecutor(1) as pool:
        _pad_to(f, header, bar)
        pending: Future | None = None
        for spec in plan:
            for chunk in chunks(spec, seed):
                if pending is not None:
                    pending.result()  # at most one chunk in flight: bounded memory, errors surface here
                pending = pool.submit(_write, f, chunk, bar)
            if pending is not None:
                pending.result()
            _pad_to(f, b"", bar)
        f.flush()
        os.fsync(f.fileno())
        if f.tell() != total:
            raise AssertionError(f"wrote {f.tell()} bytes, planned {total}")


def _write(f, chunk, bar: tqdm) -> None:
    f.write(chunk)  # releases the GIL: the next chunk is generated meanwhile
    bar.update(chunk.nbytes)


def _pad_to(f, data: bytes, bar: tqdm) -> None:
    """Write `data`, then zeros up to the data alignment."""
    n = f.tell() + len(data)
    f.write(data + bytes(aligned(n) - n))
    bar.update(aligned(n) - n + len(data))
