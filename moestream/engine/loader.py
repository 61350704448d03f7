"""Open a GGUF, check it, and build the model: resident tensors copied into RAM in their GGUF types, routed
experts left in the file and streamed through a byte-budgeted ExpertCache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..formats import quants
from ..formats.gguf import GGUFFile
from ..formats.split import open_gguf
from ..formats.weight import QuantWeight
from ..kernels import cpu
from ..kernels.dispatch import Compute
from ..models.args import ModelArgs
from ..models.decoder import ArchSpec, DecoderModel
from ..models.registry import spec_for
from ..models.shapes import check_shapes
from ..cache.config import CacheConfig
from ..cache.expert_cache import ExpertCache
from ..store.experts import ExpertStore
from ..telemetry import rss_bytes
from ..prefetch.lookahead import Prefetcher
from ..prefetch.predictors import DEFAULT_THRESHOLDS, make_predictor
from .sizing import kv_bytes_per_token
from ..errors import ConfigError
from .sharded import ShardConfig, Sharding, attach, open_rank0
from .streaming import open_cache

DEFAULT_CONTEXT_CAP = 4096  # without --ctx-size: the model's context, at most this (KV caches grow on demand)

PROGRESS_MIN_BYTES = 256 << 20  # show a progress bar only when loading this much


@dataclass
class ModelInfo:
    """What a GGUF holds, checked, before any weight is read."""

    gguf: GGUFFile
    args: ModelArgs
    spec: ArchSpec
    experts: ExpertStore | None
    resident_names: list[str]

    @property
    def resident_bytes(self) -> int:
        return sum(self.gguf.tensors[n].nbytes for n in self.resident_names)

    @property
    def expert_bytes(self) -> int:
        return self.experts.total_nbytes() if self.experts else 0

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.gguf.tensors.values())

    @property
    def active_params(self) -> int:
        """Parameters one token touches: everything resident plus its top-k experts in every layer."""
        resident = sum(self.gguf.tensors[n].n_elements for n in self.resident_names)
        if not self.experts:
            return resident
        a = self.args
        per_expert = 3 * a.ff_expert * a.d_model
        return resident + len(a.moe_layers) * a.n_experts_used * per_expert


@dataclass
class LoadedModel:
    path: Path
    gguf: GGUFFile
    args: ModelArgs
    spec: ArchSpec
    model: DecoderModel
    experts: ExpertStore | None
    resident_bytes: int
    cache: ExpertCache | None = None  # None: no experts, or read through the memory map
    rss_after_load: int = 0
    sharding: Sharding | None = None  # rank 0 of an expert-sharded run

    @property
    def fault(self) -> str | None:
        """Why the model cannot compute any more (an expert rank failed), or None."""
        link = self.sharding.link if self.sharding is not None else None
        return link.fault if link is not None else None

    @property
    def expert_bytes(self) -> int:
        return self.experts.total_nbytes() if self.experts else 0

    def close(self) -> None:
        if self.sharding is not None:
            self.sharding.close()
        if self.cache is not None:
            self.cache.close()


def check_model(gguf: GGUFFile) -> ModelInfo:
    """Architecture, hyper-parameters, quant types and expert tensors, checked; raises MoestreamError."""
    args = ModelArgs.from_gguf(gguf.metadata)
    spec = spec_for(args)
    for info in gguf.tensors.values():
        quants.check_supported(info.qtype, info.name)
    experts = ExpertStore(gguf, args.n_layers, args.n_experts, args.moe_layers) if args.n_experts else None
    check_shapes(gguf.tensors, args, spec, experts.layout if experts else None, _vocab_size(gguf))
    expert_names = experts.tensor_names() if experts else set()
    resident = [n for n in gguf.tensors if n not in expert_names and not _in_skipped_layer(n, args.n_layers)]
    return ModelInfo(gguf, args, spec, experts, resident)


def _in_skipped_layer(name: str, n_layers: int) -> bool:
    """A tensor of a block past the ones we run (GLM's and DeepSeek's trailing MTP/NextN blocks): never loaded."""
    if not name.startswith("blk."):
        return False
    index = name[4:].split(".", 1)[0]
    return index.isdigit() and int(index) >= n_layers


def inspect_file(path: str | Path) -> ModelInfo:
    """Open a GGUF and check it, reading no weights (`moestream inspect`)."""
    return check_model(open_gguf(path))


def _vocab_size(gguf: GGUFFile) -> int | None:
    """The tokenizer's vocabulary size, which the embedding and output rows must match (None: no tokenizer)."""
    tokens = gguf.get("tokenizer.ggml.tokens")
    return len(tokens) if isinstance(tokens, list) and tokens else None


def load_model(path: str | Path, progress: bool = True, threads: int | None = None,
               cache: CacheConfig = CacheConfig(), reader=None, context: int | None = None,
               sequences: int = 1, shard: ShardConfig | None = None) -> LoadedModel:
    """threads: for the native kernels (default: one per core available to this process). context, sequences:
    the KV caches an automatic budget leaves room for (default: the model's context capped, one sequence).
    cache: how experts are streamed; reader: a Reader to use instead of the configured one (tests inject faults).
    shard: this is rank 0 of an expert-sharded run (engine/sharded.py): its cache holds only its own experts."""
    info = check_model(open_gguf(path))
    sharding = _join(info, shard, cache)
    try:
        return _load(path, info, progress, threads, cache, reader, context, sequences, sharding)
    except BaseException:
        if sharding is not None:
            sharding.close()
        raise


def _join(info: ModelInfo, shard: ShardConfig | None, cache: CacheConfig) -> Sharding | None:
    if shard is None:
        return None
    if cache.mmap:
        raise ConfigError("--shard experts streams each rank's experts through its cache; drop --mmap")
    return open_rank0(info, shard)


def _load(path, info: ModelInfo, progress: bool, threads: int | None, cache: CacheConfig, reader, context: int | None,
          sequences: int, sharding: Sharding | None) -> LoadedModel:
    resident = _load_resident(info.gguf, info.resident_names, progress)
    source = expert_cache = None
    if info.experts is not None:
        if cache.mmap:
            source = info.experts
        else:
            kv = kv_bytes_per_token(info.args) * (context or min(info.args.context_length, DEFAULT_CONTEXT_CAP))
            source = expert_cache = open_cache(info.gguf.paths, info.experts, info.args.n_experts_used, cache, reader,
                                               kv_reserve=kv * sequences,
                                               n_owned=sharding.plan.count(0) if sharding else None)
    try:
        model = _build(info, resident, source, threads, cache.repack != "off")
        if expert_cache is not None:
            _install_packer(model.compute, expert_cache, cache.repack)
        if sharding is not None:
            attach(model, sharding)
        if expert_cache is not None and cache.prefetch:
            _install_prefetch(model, expert_cache, cache, sharding)
    except BaseException:
        if expert_cache is not None:
            expert_cache.close()  # its reader threads and ring would outlive a failed load
        raise
    info.gguf.release_pages()  # header pages (vocabulary strings) are parsed already
    return LoadedModel(Path(path), info.gguf, info.args, info.spec, model, info.experts, info.resident_bytes,
                       expert_cache, rss_bytes(), sharding)


def _build(info: ModelInfo, resident: dict[str, QuantWeight], source, threads: int | None,
           repack: bool = True) -> DecoderModel:
    compute = Compute(threads=threads, repack=repack) if threads is not None else Compute(repack=repack)
    if cpu.available():
        # Our kernels own the cores; torch's OpenMP threads would spin-wait beside them (measured: decode
        # 4.6 -> 6.1 tok/s on an 8-layer Mixtral-shaped Q4_0 file, 2 cores). Torch keeps one thread.
        torch.set_num_threads(1)
    return DecoderModel(info.args, info.spec, resident, source, compute)


def _install_packer(compute: Compute, expert_cache, repack: str) -> None:
    """--repack: "on" packs every expert as it is read; "auto" does so when the cache holds the whole model, else
    packs the hot ones (cache/expert_cache.py says why)."""
    mode = {"on": "read", "off": "off"}.get(repack, "read" if expert_cache.holds_all else "hot")
    expert_cache.set_packer(compute.pack_expert, mode)


def set_prefetch(lm: LoadedModel, cache: CacheConfig) -> None:
    """Between steps: replace the model's prefetcher (if any) with the one `cache` asks for (or none)."""
    if lm.cache is None:
        return
    if lm.cache.on_acquire is not None:
        lm.cache.on_acquire.__self__.uninstall()
    if cache.prefetch:
        _install_prefetch(lm.model, lm.cache, cache, lm.sharding)


def _install_prefetch(model: DecoderModel, expert_cache, cache: CacheConfig, sharding: Sharding | None = None) -> None:
    """With expert sharding, rank 0 reads ahead only its own experts and names the others' to their owners."""
    a = model.args
    predictor = make_predictor(cache.predictor, a.n_layers, a.n_experts, a.n_experts_used, cache.prefetch_depth)
    threshold = cache.prefetch_threshold
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS[cache.predictor]
    prefetcher = Prefetcher(model, expert_cache, predictor, cache.prefetch_depth, threshold)
    if sharding is not None and sharding.remote is not None:  # (one rank alone has no one to name)
        prefetcher.shard_with(sharding.owned, sharding.remote)
    prefetcher.install()


def _load_resident(gguf: GGUFFile, names: list[str], progress: bool) -> dict[str, QuantWeight]:
    total = sum(gguf.tensors[n].nbytes for n in names)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="loading resident weights",
               disable=not progress or total < PROGRESS_MIN_BYTES)
    out = {}
    with bar:
        for name in names:
            info = gguf.tensors[name]
            raw = torch.from_numpy(gguf.read(name))  # a copy in RAM, read without mapping the file
            out[name] = QuantWeight(raw, info.qtype, info.shape)
            bar.update(info.nbytes)
    return out
