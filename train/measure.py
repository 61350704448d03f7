"""Numbers for the model report: held-out perplexity against unigram/bigram baselines, and routing statistics."""

from __future__ import annotations

import math

import numpy as np
import torch


def windows(ids: np.ndarray, seq: int) -> torch.Tensor:
    """Held-out token stream -> non-overlapping windows [N, seq] (the tail shorter than a window is dropped)."""
    n = len(ids) // seq
    return torch.from_numpy(ids[: n * seq].astype(np.int64)).view(n, seq)


@torch.no_grad()
def model_eval(model, held: torch.Tensor, batch: int = 16) -> dict:
    """Perplexity over every position but each window's first, plus each layer's top-k choices [N*seq, k]."""
    nll, count, choices = 0.0, 0, None
    for x in held.split(batch):
        out = model(input_ids=x, output_router_logits=True)
        logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
        nll -= logp.gather(-1, x[:, 1:, None]).sum().item()
        count += x[:, 1:].numel()
        k = model.config.num_experts_per_tok
        picks = [r.topk(k, -1).indices.view(x.shape[0], x.shape[1], k) for r in out.router_logits]
        choices = picks if choices is None else [torch.cat([a, b]) for a, b in zip(choices, picks)]
    return {"perplexity": math.exp(nll / count), "choices": choices}


def ngram_baselines(train_ids: np.ndarray, held: torch.Tensor, vocab: int) -> dict:
    """Unigram (add-one) and bigram interpolated with it; the bigram weight is the best on held-out (flatters it)."""
    uni = (np.bincount(train_ids, minlength=vocab) + 1.0) / (len(train_ids) + vocab)
    pairs = np.bincount(train_ids[:-1].astype(np.int64) * vocab + train_ids[1:], minlength=vocab * vocab)
    prev_counts = np.bincount(train_ids[:-1], minlength=vocab).astype(np.float64)
    x = held.numpy()
    a, b = x[:, :-1].ravel().astype(np.int64), x[:, 1:].ravel().astype(np.int64)
    p_bi = pairs[a * vocab + b] / np.maximum(prev_counts[a], 1.0)
    best = min((_ppl(lam * p_bi + (1 - lam) * uni[b]), lam) for lam in np.linspace(0.05, 0.95, 19))
    return {"unigram": _ppl(uni[b]), "bigram": best[0], "bigram_weight": round(float(best[1]), 2)}


def _ppl(p: np.ndarray) -> float:
    return float(np.exp(-np.log(p).mean()))


def routing_stats(choices: list[torch.Tensor], n_experts: int) -> list[dict]:
    """Per layer: share of routed slots each expert takes, and how often consecutive tokens share experts."""
    k = choices[0].shape[-1]
    return [_layer_stats(c, n_experts, k) for c in choices]


def _layer_stats(c: torch.Tensor, n_experts: int, k: int) -> dict:
    # c: [N, seq, k] expert ids
    load = torch.bincount(c.flatten(), minlength=n_experts).double()
    prev, cur = c[:, :-1], c[:, 1:]
    shared = (cur[..., :, None] == prev[..., None, :]).any(-1).sum(-1)  # [N, seq-1]: experts kept from the last token
    return {"load": (load / load.sum()).tolist(), "same_set": (shared == k).double().mean().item(),
            "any_shared": (shared > 0).double().mean().item(), "kept_share": (shared / k).double().mean().item()}


def chance_stickiness(n_experts: int, k: int) -> dict:
    """The same numbers for a router that picks k of n uniformly at random."""
    same = 1 / math.comb(n_experts, k)
    none = math.comb(n_experts - k, k) / math.comb(n_experts, k)
    return {"same_set": same, "any_shared": 1 - none, "kept_share": k / n_experts}
