"""`moestream pull | list | rm` and `-m hf:`, through the real CLI against a local fake hub
(tests/fixtures/fake_hub.py): split models fetched whole, resumed transfers, corrupt downloads caught, offline use, one-line errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_bad_input import assert_one_line_error
from tests.fixtures.cli_process import run_moestream
from tests.fixtures.fake_hub import FakeHub
from tests.fixtures.gguf_edit import copy_gguf
from tests.fixtures.tiny_models import gguf_path

REPO = "test/tiny-GGUF"
SPLIT = [f"tiny-Q8_0-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    """The repo: a split model in three shards (named Q8_0, F32 inside), the same model unsplit, a README."""
    out = tmp_path_factory.mktemp("hub-files")
    copy_gguf(gguf_path("mixtral"), out / "tiny-Q8_0.gguf", split_max_tensors=10)
    found = {p.name: p.read_bytes() for p in out.glob("*.gguf")}
    assert sorted(found) == SPLIT
    return {**found, "tiny-F32.gguf": gguf_path("mixtral").read_bytes(), "README.md": b"# tiny\n"}


@pytest.fixture
def hub(files):
    with FakeHub(REPO, dict(files)) as fake:
        yield fake


@pytest.fixture
def cli(hub, tmp_path):
    """Runs `moestream ARGS` online against the fake hub, with its own empty HF_HOME; offline=True sets
    HF_HUB_OFFLINE=1 instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1")

    def run(*args: str, offline: bool = False) -> subprocess.CompletedProcess:
        return run_moestream(list(args), timeout=120, env={**env, "HF_HUB_OFFLINE": "1" if offline else "0"})
    run.cache = tmp_path / "hf" / "hub"
    return run


def cached_names(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*.gguf") if p.exists())


def test_pull_generate_list_rm(cli, hub, files):
    result = cli("pull", f"{REPO}:q8_0")
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert [p.name for p in paths] == SPLIT and all(p.is_relative_to(cli.cache) for p in paths)
    assert [p.read_bytes() for p in paths] == [files[n] for n in SPLIT]

    flags = ("-p", "hi", "-n", "4", "--temp", "0")
    via_hub = cli("generate", "-m", f"hf:{REPO}:Q8_0", *flags, offline=True)  # cached: no network needed
    direct = cli("generate", "-m", str(gguf_path("mixtral")), *flags)
    assert via_hub.returncode == 0, via_hub.stderr
    assert via_hub.stdout == direct.stdout and "pulling" not in via_hub.stderr

    listed = cli("list").stdout
    assert all(name in listed for name in SPLIT) and "tiny-F32.gguf" not in listed and REPO in listed

    removed = cli("rm", f"{REPO}:Q8_0")
    assert removed.returncode == 0, removed.stderr
    assert cached_names(cli.cache) == [] and not list((cli.cache / "models--test--tiny-GGUF" / "blobs").iterdir())
    assert "tiny-Q8_0" not in cli("list").stdout


def test_pulling_one_shard_by_name_fetches_all_and_keeps_other_models(cli, hub):
    assert cli("pull", f"{REPO}:tiny-F32.gguf").returncode == 0
    result = cli("pull", f"{REPO}:{SPLIT[1]}")
    assert result.returncode == 0, result.stderr
    assert cached_names(cli.cache) == sorted(["tiny-F32.gguf", *SPLIT])
    assert cli("rm", f"{REPO}:Q8_0").returncode == 0
    assert cached_names(cli.cache) == ["tiny-F32.gguf"]  # rm took only what it was asked


def test_hf_model_flag_pulls_when_not_cached(cli, hub):
    result = cli("generate", "-m", f"hf:{REPO}:F32", "-p", "hi", "-n", "2", "--temp", "0")
    assert result.returncode == 0, result.stderr
    assert "pulling" in result.stderr and cached_names(cli.cache) == ["tiny-F32.gguf"]


def test_interrupted_download_resumes_with_a_range_request(cli, hub):
    # past huggingface_hub's first 10 MiB chunk: it keeps only whole chunks, so a cut inside the first restarts at 0
    hub.cut["tiny-F32.gguf"] = 12_000_000
    result = cli("pull", f"{REPO}:F32")
    assert "Traceback" not in result.stderr
    if result.returncode != 0:  # a client that does not retry by itself: the next pull finishes
        assert_one_line_error(result)
        result = cli("pull", f"{REPO}:F32")
    assert result.returncode == 0, result.stderr
    ranges = hub.gets("tiny-F32.gguf")
    assert ranges[0] is None and ranges[-1].startswith("bytes=") and ranges[-1] != "bytes=0-", ranges
    assert 0 < int(ranges[-1].removeprefix("bytes=").rstrip("-")) <= 12_000_000
    assert Path(result.stdout.split()[0]).read_bytes() == hub.files["tiny-F32.gguf"]


def test_corrupt_download_is_caught_and_deleted(cli, hub):
    hub.advertise["tiny-F32.gguf"] = hashlib.sha256(b"other bytes").hexdigest()
    result = cli("pull", f"{REPO}:F32")
    assert_one_line_error(result, "tiny-F32.gguf", "sha256 mismatch")
    assert cached_names(cli.cache) == []
    assert not any(p.stat().st_size for p in (cli.cache / "models--test--tiny-GGUF" / "blobs").iterdir())


@pytest.mark.parametrize("args, needles", [
    (("pull", "test/missing-GGUF:Q8_0"), ("test/missing-GGUF", "no such model repository")),
    (("pull", f"{REPO}:Q4_K_M"), ("no GGUF matching 'Q4_K_M'", "tiny-F32.gguf", "tiny-Q8_0-*-of-00003.gguf")),
    (("pull", REPO), ("several models", "tiny-F32.gguf")),
    (("pull", "no-slash"), ("owner/name",)),
    (("rm", f"{REPO}:Q8_0"), ("not in the Hugging Face cache",)),
])
def test_bad_requests_are_one_line(cli, hub, args, needles):
    assert_one_line_error(cli(*args), *needles)


def test_offline_and_unreachable_are_one_line(cli, hub):
    offline = cli("generate", "-m", f"hf:{REPO}:Q8_0", "-p", "hi", offline=True)
    assert_one_line_error(offline, "not in the Hugging Face cache", "HF_HUB_OFFLINE")
    hub.__exit__()  # the hub goes away: a network error
    assert_one_line_error(cli("pull", f"{REPO}:Q8_0"), "cannot download from the Hugging Face hub")
