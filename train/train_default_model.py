"""Train moestream's embedded default model: a tiny Mixtral (8 experts, top-2) on eight public-domain novels.

    python -m train.train_default_model [--steps 1200] [--out moestream/assets/tiny-mixtral-novels.gguf]

Needs `pip install -e ".[test]"` (transformers, tokenizers). Deterministic for a given seed, thread count, torch
version and CPU: the same command rebuilds the same weights. Writes the GGUF (Q8_0, routers and norms F32) and a
JSON report (perplexities, baselines, routing statistics) beside docs/default-model.md."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import MixtralConfig, MixtralForCausalLM

from .bpe import EOT, train_bpe
from .corpus import load_corpus
from .export import export_gguf
from .measure import chance_stickiness, model_eval, ngram_baselines, routing_stats, windows

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--out", type=Path, default=ROOT / "moestream" / "assets" / "tiny-mixtral-novels.gguf")
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / "default-model.json")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--d-model", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--ff", type=int, default=320, help="width of one expert")
    ap.add_argument("--seq", type=int, default=256, help="training window = the model's context length")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--aux", type=float, default=0.05, help="weight of the per-layer load-balancing loss")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()


def build_model(args, vocab: int) -> MixtralForCausalLM:
    config = MixtralConfig(vocab_size=vocab, hidden_size=args.d_model, intermediate_size=args.ff,
                           num_hidden_layers=args.layers, num_attention_heads=args.heads,
                           num_key_value_heads=args.kv_heads, num_local_experts=args.experts, num_experts_per_tok=2,
                           max_position_embeddings=args.seq, rope_theta=10000.0, rms_norm_eps=1e-5,
                           tie_word_embeddings=False, router_aux_loss_coef=0.0, output_router_logits=True,
                           attn_implementation="sdpa")
    return MixtralForCausalLM(config)


def optimizer(model, lr: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    flat = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": flat, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95))


def lr_at(step: int, args) -> float:
    warm = min(100, args.steps // 10)
    if step < warm:
        return args.lr * (step + 1) / warm
    t = (step - warm) / max(1, args.steps - warm)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def balance_loss(router_logits: tuple[torch.Tensor, ...], k: int) -> torch.Tensor:
    """Switch-style load balancing, per layer: E * sum_e(share of top-k slots to e * mean router probability of e),
    1 when balanced. (transformers' own version pools all layers' tokens, which balances expert e summed over
    layers and let single layers leave experts unused.)"""
    losses = []
    for logits in router_logits:  # [tokens, E]
        probs = torch.softmax(logits.float(), dim=-1)
        picked = torch.zeros_like(probs).scatter_(1, probs.topk(k, dim=-1).indices, 1.0)
        losses.append(probs.shape[-1] * (picked.mean(0) / k * probs.mean(0)).sum())
    return torch.stack(losses).mean()


def train(model, ids: torch.Tensor, args) -> list[float]:
    gen = torch.Generator().manual_seed(args.seed)
    opt, losses = optimizer(model, args.lr), []
    model.train()
    bar = tqdm(range(args.steps), desc="train", unit="step")
    for step in bar:
        starts = torch.randint(0, len(ids) - args.seq - 1, (args.batch,), generator=gen)
        x = torch.stack([ids[s: s + args.seq] for s in starts])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        out = model(input_ids=x, labels=x)
        loss = out.loss + args.aux * balance_loss(out.router_logits, model.config.num_experts_per_tok)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(out.loss.item())  # the language-model loss alone
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    return losses


def main() -> int:
    args = parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus)
    bpe = train_bpe(corpus.train, args.vocab)
    eot = [bpe.eot_id]
    train_ids = np.array([t for book in corpus.train for t in bpe.encode(book) + eot], dtype=np.int32)
    held_ids = np.array([t for book in corpus.held_out for t in bpe.encode(book) + eot], dtype=np.int32)
    print(f"train {len(train_ids):,} tokens, held-out {len(held_ids):,} tokens, vocab {len(bpe.tokens)}")
    model = build_model(args, len(bpe.tokens))
    n_params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    losses = train(model, torch.from_numpy(train_ids.astype(np.int64)), args)
    train_s = time.perf_counter() - t0
    model.eval()
    held = windows(held_ids, args.seq)
    ev = model_eval(model, held)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    export_gguf(model, bpe, args.out, name="moestream tiny Mixtral (novels)")
    report = {
        "command": "python -m train.train_default_model " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                      sorted(vars(args).items()) if k not in ("corpus", "out", "report")),
        "torch": torch.__version__, "corpus_sha256": corpus.sha256, "eot": EOT,
        "tokens": {"train": len(train_ids), "held_out": len(held_ids), "held_out_scored": held[:, 1:].numel()},
        "parameters": n_params, "train_seconds": round(train_s), "final_train_loss": float(np.mean(losses[-50:])),
        "held_out_perplexity": ev["perplexity"], "baselines": ngram_baselines(train_ids, held, len(bpe.tokens)),
        "routing": routing_stats(ev["choices"], args.experts), "routing_chance": chance_stickiness(args.experts, 2),
        "gguf_bytes": args.out.stat().st_size,
    }
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "routing"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
