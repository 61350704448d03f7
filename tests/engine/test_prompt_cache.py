"""The prompt cache in the engine: a request sharing a prefix with an earlier one restores exactly that many
tokens (token-exact, never the prompt's last token) and generates exactly what it generates without the cache,
for standard attention and for MLA's latent rows; the byte budget holds with the least recently used blocks
going first; a linear-attention model is refused with the reason."""

from __future__ import annotations

import pytest
import torch

from moestream.engine import GREEDY, Engine, EngineConfig, EngineRequest
from moestream.engine.kv_cache import KVCache
from moestream.engine.prompt_cache import PromptCache
from moestream.errors import ConfigError
from tests.fixtures.tiny_models import gguf_path

PREFIX = [(7 * i + 3) % 250 + 5 for i in range(150)]  # 150 tokens: two full 64-token blocks and a partial one


def generate(engine: Engine, prompt: list[int], n: int = 10) -> tuple[list[int], int]:
    """Greedy tokens and the prompt tokens the cache gave."""
    out = []
    engine.scheduler.submit(EngineRequest(list(prompt), GREEDY, n, out.append))
    while not out or not out[-1].finish_reason:
        engine.scheduler.step()
    return [e.token for e in out if e.token is not None], out[-1].cached_tokens


@pytest.fixture(scope="module", params=["qwen3moe", "deepseek2"])
def engines(request):
    path = gguf_path(request.param)
    with Engine.open(path, EngineConfig(progress=False, prompt_cache=64 << 20)) as cached, \
            Engine.open(path, EngineConfig(progress=False)) as plain:
        yield cached, plain


@pytest.mark.parametrize("suffix", [[11, 12, 13], [40], PREFIX[:30]])
def test_shared_prefix_is_restored_token_exact_and_changes_nothing(engines, suffix):
    cached, plain = engines
    generate(cached, PREFIX + [99, 98])  # leaves PREFIX + its two tokens + its output in the cache
    tokens, hit = generate(cached, PREFIX + suffix)
    assert hit >= len(PREFIX)  # every shared token (more where the suffix happens to continue the same way)
    assert tokens == generate(plain, PREFIX + suffix)[0]


def test_the_same_prompt_again_restores_all_but_its_last_token(engines):
    cached, plain = engines
    prompt = PREFIX[:97]
    first, _ = generate(cached, prompt)
    again, hit = generate(cached, prompt)
    assert hit == len(prompt) - 1 and again == first == generate(plain, prompt)[0]


def test_a_different_start_restores_nothing(engines):
    cached, _ = engines
    generate(cached, PREFIX)
    assert generate(cached, [200] + PREFIX)[1] == 0


def kv_with(tokens: list[int], layers: int = 2) -> KVCache:
    """A KV cache whose rows hold their token id (so restored rows can be checked)."""
    kv = KVCache(layers, 2, 4, 4096)
    for layer in range(layers):
        rows = torch.tensor(tokens, dtype=torch.float32)[:, None, None].expand(len(tokens), 2, 4)
        kv.append(layer, rows, rows + 0.5)
    return kv


def test_rows_come_back_in_order_and_budget_evicts_least_recently_used():
    block_bytes = 2 * 2 * (2 * 16 * 4) * 4  # layers x (k, v) x KVH*block*D x float32
    pc = PromptCache(budget=6 * block_bytes, block=16)
    a, b = list(range(1, 49)), list(range(100, 148))  # 3 blocks each
    pc.store(kv_with(a), a)
    pc.store(kv_with(b), b)
    assert pc.blocks == 6 and pc.bytes == 6 * block_bytes
    restored = KVCache(2, 2, 4, 4096)
    assert pc.restore(restored, a + [7]) == 48
    assert torch.equal(restored.k[1][0, :48, 0], torch.tensor(a, dtype=torch.float32))
    assert torch.equal(restored.v[0][1, :48, 3], torch.tensor(a, dtype=torch.float32) + 0.5)
    c = list(range(300, 316))
    pc.store(kv_with(c), c)  # one block over budget: b's least recently used block goes
    assert pc.bytes <= pc.budget and pc.stats.evicted_blocks == 1
    assert pc.restore(KVCache(2, 2, 4, 4096), a + [7]) == 48  # a was used more recently than b
    assert pc.restore(KVCache(2, 2, 4, 4096), b + [7]) == 0  # b's first block is gone: its chain is unreachable


def test_partial_block_match_is_token_exact():
    pc = PromptCache(budget=1 << 20, block=16)
    a = list(range(1, 41))  # 2 full blocks + 8 tokens
    pc.store(kv_with(a), a)
    assert pc.restore(KVCache(2, 2, 4, 4096), a[:37] + [999]) == 37
    assert pc.restore(KVCache(2, 2, 4, 4096), a[:20] + [999] * 10) == 20


def test_linear_attention_models_are_refused():
    with pytest.raises(ConfigError, match="linear-attention"):
        Engine.open(gguf_path("qwen3next", "q8_0"), EngineConfig(progress=False, prompt_cache=1 << 20))


# --- the disk tier -------------------------------------------------------------------------------------------------

def test_blocks_outlive_the_process_on_disk(tmp_path):
    from moestream.engine.prompt_disk import PromptDisk
    a = list(range(1, 41))
    first = PromptCache(budget=1 << 20, block=16, disk=PromptDisk(tmp_path, "m", 1 << 20))
    first.store(kv_with(a), a)
    first.close()  # queued writes are on disk now
    assert len(list((tmp_path / "m").glob("*.kvb"))) == 3
    later = PromptCache(budget=1 << 20, block=16, disk=PromptDisk(tmp_path, "m", 1 << 20))
    restored = KVCache(2, 2, 4, 4096)
    assert later.restore(restored, a[:37] + [999]) == 37 and later.stats.disk_blocks == 3
    assert torch.equal(restored.k[0][1, :37, 2], torch.tensor(a[:37], dtype=torch.float32))
    assert torch.equal(restored.v[1][0, :37, 0], torch.tensor(a[:37], dtype=torch.float32) + 0.5)


def test_a_damaged_file_is_a_miss_and_is_removed(tmp_path):
    from moestream.engine.prompt_disk import PromptDisk
    a = list(range(1, 17))
    pc = PromptCache(budget=1 << 20, block=16, disk=PromptDisk(tmp_path, "m", 1 << 20))
    pc.store(kv_with(a), a)
    pc.close()
    [path] = (tmp_path / "m").glob("*.kvb")
    path.write_bytes(path.read_bytes()[:-10])  # truncated, as a full disk might leave it
    later = PromptCache(budget=1 << 20, block=16, disk=PromptDisk(tmp_path, "m", 1 << 20))
    assert later.restore(KVCache(2, 2, 4, 4096), a + [5]) == 0 and not path.exists()


def test_the_disk_budget_drops_the_least_recently_used_files(tmp_path):
    from moestream.engine.prompt_disk import PromptDisk
    block_file = 2 * 2 * (2 * 16 * 4) * 4  # tensor bytes of one block; each file adds a small header
    disk = PromptDisk(tmp_path, "m", 3 * block_file + 3 * 400)
    pc = PromptCache(budget=1 << 20, block=16, disk=disk)
    for start in (100, 200, 300, 400):
        tokens = list(range(start, start + 16))
        pc.store(kv_with(tokens), tokens)
        pc.close()
    assert disk.bytes <= disk.budget and len(list((tmp_path / "m").glob("*.kvb"))) == 3


def test_a_restarted_engine_reuses_the_directory_with_the_same_output(tmp_path):
    path = gguf_path("qwen3moe")
    config = EngineConfig(progress=False, prompt_cache=64 << 20, prompt_cache_dir=str(tmp_path))
    with Engine.open(path, config) as first:
        expected, _ = generate(first, PREFIX + [99])
    with Engine.open(path, config) as restarted:
        tokens, hit = generate(restarted, PREFIX + [99])
    assert hit == len(PREFIX) and tokens == expected


def test_another_model_file_gets_another_directory(tmp_path):
    from moestream.engine.prompt_disk import model_key
    layout = (2, (2, 16, 16))
    assert model_key(gguf_path("qwen3moe"), layout) != model_key(gguf_path("qwen3moe", "q8_0"), layout)
    assert model_key(gguf_path("qwen3moe"), layout) == model_key(gguf_path("qwen3moe"), layout)


def test_a_directory_without_a_ram_tier_is_refused():
    with pytest.raises(ConfigError, match="--prompt-cache SIZE"):
        EngineConfig(prompt_cache_dir="/tmp/x")
