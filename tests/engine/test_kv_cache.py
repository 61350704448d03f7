import pytest
import torch

from moestream.engine.kv_cache import KVCache
from moestream.errors import ConfigError


def test_grows_and_returns_everything_appended():
    cache = KVCache(n_layers=2, n_kv_heads=2, head_dim=4, max_len=1000, initial=4)
    chunks = [torch.randn(n, 2, 4) for n in (3, 5, 1, 20)]
    for c in chunks:
        for layer in range(2):
            k, v = cache.append(layer, c, -c)
    # head-major: [KVH, S, Dh]
    assert torch.equal(k, torch.cat(chunks).transpose(0, 1)) and torch.equal(v, -torch.cat(chunks).transpose(0, 1))
    assert cache.length == 29


def test_context_overflow_is_a_clear_error():
    cache = KVCache(n_layers=1, n_kv_heads=1, head_dim=2, max_len=8)
    cache.append(0, torch.zeros(6, 1, 2), torch.zeros(6, 1, 2))
    with pytest.raises(ConfigError, match="context length 8 exceeded"):
        cache.append(0, torch.zeros(3, 1, 2), torch.zeros(3, 1, 2))
