"""Eviction policies: pure bookkeeping over keys, no I/O. The cache tells a policy what happened and asks it for
victims in order; it skips keys it cannot evict (in use, or still being read)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Iterator, Protocol

Key = Hashable


class EvictionPolicy(Protocol):
    name: str

    def inserted(self, key: Key) -> None: ...

    def hit(self, key: Key) -> None: ...

    def removed(self, key: Key) -> None: ...

    def victims(self) -> Iterator[Key]:
        """Keys in the order they should be evicted."""
        ...


class LRU:
    """Least recently used first."""

    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[Key, None] = OrderedDict()

    def inserted(self, key: Key) -> None:
        self._order[key] = None

    def hit(self, key: Key) -> None:
        self._order.move_to_end(key)

    def removed(self, key: Key) -> None:
        self._order.pop(key, None)

    def victims(self) -> Iterator[Key]:
        return iter(list(self._order))


class LayerCycle:
    """Decode visits layers 0..L-1 in a cycle, so an expert's next use is at the earliest when its layer comes
    round again. While layer l is fetched, evict first layer l's other experts (next needed a whole step later),
    then layer l-1's, l-2's, ... and layer l+1's last; least recently used first within a layer.

    When a step's experts do not all fit in the budget (many sequences in a batch), LRU evicts exactly what the
    next layers are about to need and every lookup misses; this keeps a stable part of the model instead, which
    is what Belady's MIN does on a cyclic pattern. Keys are (layer, expert)."""

    name = "layer"

    def __init__(self) -> None:
        self._layers: dict[int, OrderedDict[Key, None]] = {}
        self._current, self._n_layers = 0, 1

    def inserted(self, key: Key) -> None:
        self._layers.setdefault(key[0], OrderedDict())[key] = None
        self._touch(key)

    def hit(self, key: Key) -> None:
        self._layers[key[0]].move_to_end(key)
        self._touch(key)

    def removed(self, key: Key) -> None:
        layer = self._layers.get(key[0])
        if layer is not None:
            layer.pop(key, None)

    def victims(self) -> Iterator[Key]:
        for back in range(self._n_layers):  # O(layers + victims tried), not a sort of every cached key
            yield from list(self._layers.get((self._current - back) % self._n_layers, ()))

    def _touch(self, key: Key) -> None:
        self._current, self._n_layers = key[0], max(self._n_layers, key[0] + 1)


class LFU:
    """Least frequently used first (counts survive eviction, so a popular expert that was pushed out comes back
    with its history); least recently used first among equal counts."""

    name = "lfu"

    def __init__(self) -> None:
        self._count: dict[Key, int] = {}
        self._order: OrderedDict[Key, None] = OrderedDict()  # cached keys, least recent first

    def inserted(self, key: Key) -> None:
        self._order[key] = None
        self._count[key] = self._count.get(key, 0) + 1

    def hit(self, key: Key) -> None:
        self._order.move_to_end(key)
        self._count[key] += 1

    def removed(self, key: Key) -> None:
        self._order.pop(key, None)

    def victims(self) -> Iterator[Key]:
        return iter(sorted(self._order, key=self._count.__getitem__))  # stable: recency breaks ties


class LayerLFU(LayerCycle):
    """The layer cycle's order between layers, least frequently used first within a layer."""

    name = "layer-lfu"

    def __init__(self) -> None:
        super().__init__()
        self._count: dict[Key, int] = {}

    def inserted(self, key: Key) -> None:
        super().inserted(key)
        self._count[key] = self._count.get(key, 0) + 1

    def hit(self, key: Key) -> None:
        super().hit(key)
        self._count[key] += 1

    def victims(self) -> Iterator[Key]:
        for back in range(self._n_layers):
            layer = self._layers.get((self._current - back) % self._n_layers, {})
            yield from sorted(layer, key=self._count.__getitem__)


POLICIES = {"lru": LRU, "layer": LayerCycle, "lfu": LFU, "layer-lfu": LayerLFU}


def make_policy(name: str) -> EvictionPolicy:
    from ..errors import ConfigError

    if name not in POLICIES:
        raise ConfigError(f"unknown cache policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name]()
