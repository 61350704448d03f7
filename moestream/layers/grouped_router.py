"""DeepSeek-V3 / GLM-4.5 routing: scores (sigmoid or softmax of the router logits) pick the experts after adding
a per-expert selection bias (`exp_probs_b`, the "auxiliary-loss-free" load balancing term), optionally only from
the best few expert groups; the weights come from the unbiased scores of the chosen experts, optionally
renormalised to sum to one, then multiplied by a constant scale.

Group-limited routing (expert_group_count > 1): experts are split into equal groups in index order, a group's score
is the sum of its two best biased scores, the `groups_used` best groups are kept and the top-k is taken over their
experts only (as transformers' DeepseekV3TopkRouter and llama.cpp do)."""

from __future__ import annotations

import torch

from .linear import QuantLinear

SCORES = ("softmax", "sigmoid")


class GroupLimitedRouter:
    def __init__(self, gate_inp: QuantLinear, k: int, *, scoring: str, bias: torch.Tensor | None, normalize: bool,
                 scale: float, n_groups: int = 1, groups_used: int = 1):
        assert scoring in SCORES, scoring
        self.gate_inp, self.k, self.scoring, self.bias = gate_inp, k, scoring, bias  # bias: [E] float32 or None
        self.normalize, self.scale, self.n_groups, self.groups_used = normalize, scale, n_groups, groups_used

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, weights, _ = self.route(x)
        return ids, weights

    def selection_probs(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, D] -> [T, E]: each token's chosen experts with their weights normalised to sum to one, zero
        elsewhere (sigmoid scores are not a distribution; a lookahead predictor reads the top-k)."""
        ids, _, top = self.route(x)
        return torch.zeros(x.shape[0], self.gate_inp.weight.shape[0]).scatter_(1, ids, top / top.sum(-1, True))

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [T, D] -> ids, weights, scores ([T, k] each; scores: the chosen experts' unbiased scores)."""
        logits = self.gate_inp(x).to(torch.float32)  # [T, E]
        scores = torch.sigmoid(logits) if self.scoring == "sigmoid" else torch.softmax(logits, dim=-1)
        choice = scores if self.bias is None else scores + self.bias
        if self.n_groups > 1:
            choice = self._keep_best_groups(choice)
        ids = torch.topk(choice, self.k, dim=-1).indices  # [T, k]
        top = scores.gather(1, ids)
        weights = top / top.sum(dim=-1, keepdim=True) if self.normalize else top
        return ids, weights * self.scale if self.scale != 1.0 else weights, top

    def _keep_best_groups(self, choice: torch.Tensor) -> torch.Tensor:
        # choice: [T, E] -> the same with every expert outside the token's best `groups_used` groups at -inf
        T, E = choice.shape
        grouped = choice.view(T, self.n_groups, E // self.n_groups)
        group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(-1)  # [T, G]
        best = group_scores.topk(self.groups_used, dim=-1).indices  # [T, groups_used]
        keep = torch.zeros(T, self.n_groups, dtype=torch.bool).scatter_(1, best, True)
        return grouped.masked_fill(~keep[:, :, None], float("-inf")).view(T, E)
