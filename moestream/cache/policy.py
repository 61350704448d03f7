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


POLICIES = {"lru": LRU}


def make_policy(name: str) -> EvictionPolicy:
    from ..errors import ConfigError

    if name not in POLICIES:
        raise ConfigError(f"unknown cache policy {name!r}; choose one of {', '.join(POLICIES)}")
    return POLICIES[name]()
