"""`moestream synth`: write a full-size GGUF with a real MoE architecture's shapes and random weights."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..engine import PRESETS, QTYPES, get_preset, qtype_of, write_synth
from .units import fmt_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a random-weight GGUF with a real MoE model's shapes (for benchmarks)")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), help="architecture and shapes to copy")
    p.add_argument("--qtype", default="q4_0", choices=sorted(QTYPES),
                   help="type of every matrix (norms and router stay F32; default q4_0)")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="FILE", help="GGUF file to write")
    p.add_argument("--layers", type=int, default=None, help="number of layers (default: the real model's)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument("--vocab", type=Path, default=None, metavar="GGUF",
                   help="copy the tokenizer from this vocab-only GGUF (e.g. llama.cpp's models/ggml-vocab-*.gguf) "
                        "instead of generating one of the preset's size")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    preset = get_preset(args.preset)
    if args.layers is not None:
        preset = preset.with_layers(args.layers)
    t0 = time.perf_counter()
    size = write_synth(args.output, preset, qtype_of(args.qtype), args.seed, args.vocab, not args.no_progress)
    seconds = time.perf_counter() - t0
    print(f"wrote {args.output}: {fmt_bytes(size)} in {seconds:.1f} s ({size / 2**30 / seconds:.2f} GiB/s)")
    return 0
