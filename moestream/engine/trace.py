"""Routing traces: for every forward step and MoE layer, the token positions, the experts each token was routed
to and their router probabilities. Recorded through each MoE block's `on_route` tap during real generation (the
PyTorch path and the native MoE step both call it, so nothing of the model is replaced); replayed
offline by `moestream simulate` (cache policies, Belady's MIN) and by predictor studies.

A trace file is JSON lines: a header {"trace": 1, "model", "n_layers", "n_experts", "k", "expert_bytes",
"slot_bytes", "ahead"}, then one record per step and layer {"seq", "step", "layer", "positions": [T],
"experts": [T][k], "probs": [T][k]}. With `ahead` D > 0, a record also has "ahead": {target layer: [T][E]}: the
routers of the next D MoE layers applied to this layer's residual stream (what the lookahead predictor sees), so
predictors can be studied offline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

from ..errors import ConfigError


def trace_header(lm, ahead: int = 0) -> dict:
    """The first line of a trace: what the simulator needs to turn budgets into cache slots."""
    from ..cache.layout import SlotLayout

    a = lm.args
    slot = lm.cache.layout.slot_size if lm.cache is not None else SlotLayout(lm.experts).slot_size
    return {"trace": 1, "model": lm.path.name, "n_layers": a.n_layers, "n_experts": a.n_experts,
            "k": a.n_experts_used, "expert_bytes": lm.expert_bytes, "slot_bytes": slot, "ahead": ahead}


class RoutingRecorder:
    """Taps (`on_route`) every MoE block of `model` and writes one record per forward step and layer to `out`; with
    `ahead`, also the next `ahead` MoE layers' router probabilities on each layer's residual stream.

    A step starts when the first MoE layer routes; its tokens take the next positions of the current sequence
    (prefill chunks, then one token per decode step), so generation code needs no hooks. Call `new_sequence()`
    before each prompt."""

    def __init__(self, model, out: IO[str], ahead: int = 0):
        self.out, self.blocks, self.ahead = out, model.blocks, ahead
        self.layers = []
        self._x: dict[int, torch.Tensor] = {}  # layer -> its residual stream this step
        for i, block in enumerate(model.blocks):
            if hasattr(block.ffn, "on_route"):
                block.ffn.on_route = self.record
                self.layers.append(i)
                if ahead:
                    block.lookahead = self._keep(i, block.lookahead)
        self._seq, self._step, self._next_pos, self._positions = -1, -1, 0, []

    def _keep(self, layer: int, inner):
        def keep(x: torch.Tensor) -> None:
            self._x[layer] = x
            if inner is not None:
                inner(x)

        return keep

    def _ahead(self, layer: int) -> dict:
        from ..prefetch.lookahead import router_lookahead

        pos = self.layers.index(layer)
        targets = self.layers[pos + 1:pos + 1 + self.ahead]
        probs = router_lookahead(self.blocks, self._x.pop(layer), targets)
        return {str(t): [[round(v, 6) for v in row] for row in p.tolist()] for t, p in probs.items()}

    def new_sequence(self) -> None:
        self._seq, self._next_pos = self._seq + 1, 0

    def record(self, layer: int, ids: torch.Tensor, probs: torch.Tensor) -> None:
        if layer == self.layers[0]:
            n = ids.shape[0]
            self._step, self._positions = self._step + 1, list(range(self._next_pos, self._next_pos + n))
            self._next_pos += n
        rec = {"seq": self._seq, "step": self._step, "layer": layer, "positions": self._positions,
               "experts": ids.tolist(), "probs": [[round(p, 5) for p in row] for row in probs.tolist()]}
        if self.ahead:
            rec["ahead"] = self._ahead(layer)
        self.out.write(json.dumps(rec, separators=(",", ":")) + "\n")


@dataclass
class Trace:
    header: dict
    records: list[dict]

    def acquires(self) -> list[tuple[int, list[int]]]:
        """What the expert cache sees: per step and layer, the distinct experts (ascending, as the MoE layer asks)."""
        return [(r["layer"], sorted({e for row in r["experts"] for e in row})) for r in self.records]


def read_trace(path: str | Path) -> Trace:
    try:
        lines = Path(path).read_text().splitlines()
        header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line.strip()]
    except (OSError, IndexError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable routing trace ({exc})") from None
    if header.get("trace") != 1 or any(not {"layer", "experts"} <= r.keys() for r in records):
        raise ConfigError(f"{path}: not a moestream routing trace (write one with `moestream trace`)")
    return Trace(header, records)


def iter_steps(trace: Trace) -> Iterator[list[dict]]:
    """Records grouped by step."""
    group: list[dict] = []
    for r in trace.records:
        if group and r["step"] != group[0]["step"]:
            yield group
            group = []
        group.append(r)
    if group:
        yield group
