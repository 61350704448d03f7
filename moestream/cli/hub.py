"""GGUF files on the Hugging Face hub, kept in the hub's own cache: choosing, downloading, checking, finding, deleting.

Rules, and why:
- The cache is huggingface_hub's (HF_HOME / HF_HUB_CACHE), written only through hf_hub_download, so llama.cpp, vLLM
  and `hf` see the same files and nothing is downloaded twice. Deleting is the one place we touch it directly
  (a snapshot's link and its blob), because delete_revisions removes whole revisions, other quants included.
- A spec is `REPO[:QUANT|:FILE]`. A FILE (ends in .gguf) or a QUANT tag (matched case-insensitively in the path)
  picks one *model*: a single file, or every shard of a split one (`name-00001-of-00003.gguf`), since a shard alone
  cannot be loaded. More than one candidate is an error listing them, never a guess.
- Every downloaded file is checked against the hub's metadata (size, and the LFS sha256): hf_hub_download checks
  only the length, and a wrong byte in a model gives wrong text, not an error. A bad file is deleted at once.
- Interrupted transfers: huggingface_hub retries a dropped connection with a Range request from where it stopped
  (5 tries, in the same process); a pull killed outright starts that file again (huggingface_hub >= 2 writes each
  attempt to its own temporary file).
- Every failure a user can cause (unknown repo, no GGUF, unknown quant, network, offline) is one ConfigError line."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

SHARD = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class Spec:
    """`REPO[:QUANT|:FILE]` taken apart; `select` is the QUANT tag or FILE name, or None."""
    repo: str
    select: str | None

    @classmethod
    def parse(cls, text: str) -> "Spec":
        repo, _, select = text.removeprefix("hf:").partition(":")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ConfigError(f"{text!r}: expected REPO[:QUANT|:FILE] with REPO as owner/name, "
                              "e.g. unsloth/Qwen3-30B-A3B-GGUF:Q4_K_M")
        return cls(repo, select or None)

    def __str__(self) -> str:
        return self.repo + (f":{self.select}" if self.select else "")


@dataclass(frozen=True)
class RemoteFile:
    """One file as the hub describes it: its path in the repo, size and (for LFS files) sha256."""
    name: str
    size: int | None
    sha256: str | None


# --- choosing files --------------------------------------------------------------------------------------------

def model_key(name: str) -> str:
    """Shards of one split model share a key (their path, -NNNNN- made `*`); any other file is its own key."""
    m = SHARD.match(name)
    return f"{m['stem']}-*-of-{m['count']}.gguf" if m else name


def group_models(names: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(model_key(name), []).append(name)
    return groups


def describe(groups: dict[str, list[str]]) -> str:
    return ", ".join(k if len(v) == 1 else f"{k} ({len(v)} shards)" for k, v in groups.items())


def choose(spec: Spec, names: list[str], where: str = "") -> list[str]:
    """The files of the one model `spec` names among `names` (.gguf paths), shards in order."""
    ggufs = [n for n in names if n.lower().endswith(".gguf")]
    if not ggufs:
        raise ConfigError(f"{spec.repo}{where} has no .gguf files")
    everything = group_models(ggufs)
    if spec.select is None:
        picked = everything
    elif spec.select.lower().endswith(".gguf"):
        picked = {k: v for k, v in everything.items() if any(spec.select in (n, n.rsplit("/", 1)[-1]) for n in v)}
    else:
        picked = {k: v for k, v in everything.items() if spec.select.lower() in k.lower()}
    if not picked:
        raise ConfigError(f"{spec.repo}{where} has no GGUF matching {spec.select!r}; it has: {describe(everything)}")
    if len(picked) > 1:
        what = "several models" if spec.select is None else f"several models matching {spec.select!r}"
        raise ConfigError(f"{spec.repo}{where} has {what}: {describe(picked)}; name one as REPO:QUANT or REPO:FILE")
    return _complete(spec, next(iter(picked.values())))


def _complete(spec: Spec, files: list[str]) -> list[str]:
    m = SHARD.match(files[0])
    if m and len(files) != int(m["count"]):
        raise ConfigError(f"{spec}: the split model {model_key(files[0])} has {len(files)} of its "
                          f"{int(m['count'])} shards")
    return files


# --- the cache, without the network ------------------------------------------------------------------------------

def cache_dir() -> Path:
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def repo_dir(repo: str) -> Path:
    return cache_dir() / ("models--" + repo.replace("/", "--"))


def cached(spec: Spec) -> list[Path] | None:
    """The local paths of the model `spec` names if every file of it is cached (main's snapshot first), else None.
    An ambiguous spec is an error here too: the cache never guesses either."""
    for snapshot in _snapshots(repo_dir(spec.repo)):
        names = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*.gguf") if p.exists()]
        if not names:
            continue
        try:
            files = choose(spec, names, " (in the cache)")
        except ConfigError as exc:
            if "several" in str(exc):
                raise
            continue
        return [snapshot / f for f in files]
    return None


def _snapshots(folder: Path) -> list[Path]:
    root = folder / "snapshots"
    if not root.is_dir():
        return []
    main = folder / "refs" / "main"
    head = main.read_text().strip() if main.is_file() else None
    return sorted(root.iterdir(), key=lambda p: (p.name != head, -p.stat().st_mtime))


def offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


# --- the network ----------------------------------------------------------------------------------------------------

def remote_files(repo: str) -> list[RemoteFile]:
    """Every file of the repo's main revision with the hub's size and sha256 (one API call)."""
    from huggingface_hub import HfApi
    with hub_errors(repo):
        info = HfApi().model_info(repo, files_metadata=True)
    return [RemoteFile(s.rfilename, s.lfs.size if s.lfs else s.size, s.lfs.sha256 if s.lfs else None)
            for s in info.siblings or []]


def pull(spec: Spec) -> list[Path]:
    """Download (or find already downloaded) the files of the model `spec` names; checked; local paths in order."""
    if offline():
        found = cached(spec)
        if found is None:
            raise ConfigError(f"{spec} is not in the Hugging Face cache ({cache_dir()}) and HF_HUB_OFFLINE is set; "
                              "unset it to download")
        return found
    _one_line_hub_logs()
    files = remote_files(spec.repo)
    by_name = {f.name: f for f in files}
    return [_download(spec.repo, by_name[name]) for name in choose(spec, list(by_name))]


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"moestream: {record.levelname.lower()}: " + " ".join(record.getMessage().split())


def _one_line_hub_logs() -> None:
    """huggingface_hub's own notes (e.g. "Trying to resume download...", which spans two lines) in our one-line form."""
    from huggingface_hub.utils import logging as hub_logging
    for handler in hub_logging.get_logger().handlers:  # the library's root logger, with its stderr handler
        handler.setFormatter(_OneLine())


def _download(repo: str, remote: RemoteFile) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    was_cached = isinstance(try_to_load_from_cache(repo, remote.name), str)
    with hub_errors(repo, remote.name):
        path = Path(hf_hub_download(repo, remote.name))
    if not was_cached:  # a cached file was checked when it arrived
        check(path, remote)
    return path


def check(path: Path, remote: RemoteFile) -> None:
    """Size and sha256 against the hub's; a bad file is deleted (link and blob), so no later run loads it."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        _delete(path)
        raise ConfigError(f"{remote.name}: downloaded {size} bytes but the hub says {remote.size}; deleted it, "
                          "pull again")
    if remote.sha256 is not None:
        digest = sha256_of(path)
        if digest != remote.sha256:
            _delete(path)
            raise ConfigError(f"{remote.name}: sha256 mismatch (got {digest}, the hub says {remote.sha256}); "
                              "deleted the download, pull again")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _delete(path: Path) -> None:
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


class hub_errors:
    """Turns huggingface_hub's and the network's exceptions into one-line ConfigErrors naming the repo (and file)."""

    def __init__(self, repo: str, name: str | None = None):
        self.what = repo + (f" {name}" if name else "")
        self.repo = repo

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (ConfigError, KeyboardInterrupt)):
            return False
        message = _message(self.repo, self.what, exc)
        if message is None:
            return False
        raise ConfigError(message) from None


def _message(repo: str, what: str, exc: BaseException) -> str | None:
    from huggingface_hub import constants
    from huggingface_hub import errors as e
    if isinstance(exc, e.GatedRepoError):
        return f"{repo} is gated on the Hugging Face hub: accept its terms on the website and log in (`hf auth login`)"
    if isinstance(exc, e.RepositoryNotFoundError):
        return (f"{repo}: no such model repository on the Hugging Face hub ({constants.ENDPOINT}); check the name, "
                "or log in (`hf auth login`) if it is private")
    if isinstance(exc, (e.RemoteEntryNotFoundError, e.RevisionNotFoundError)):
        return f"{what}: not found on the Hugging Face hub"
    if isinstance(exc, e.OfflineModeIsEnabled):
        return f"{what}: HF_HUB_OFFLINE is set, so the hub cannot be asked; unset it to download"
    if isinstance(exc, e.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return f"{what}: the Hugging Face hub answered HTTP {status}; try again later"
    if isinstance(exc, (e.LocalEntryNotFoundError, OSError)) or _is_transport_error(exc):
        detail = " ".join(str(exc).split())[:200]
        return f"{what}: cannot download from the Hugging Face hub ({constants.ENDPOINT}): {detail}"
    return None


def _is_transport_error(exc: BaseException) -> bool:
    """httpx2's (huggingface_hub >= 2) or httpx's connection, timeout and protocol errors, by name: both derive
    TransportError, and importing either would tie us to one huggingface_hub generation."""
    return any(c.__name__ == "TransportError" and c.__module__.startswith("httpx") for c in type(exc).__mro__)


def say(message: str) -> None:
    print(f"moestream: {message}", file=sys.stderr)


def resolve_model(text: str) -> str:
    """`-m hf:REPO[:QUANT|:FILE]`: the cached file (first shard) without the network, else pulled first."""
    spec = Spec.parse(text)
    found = cached(spec)
    if found is None:
        if offline():
            raise ConfigError(f"{spec} is not in the Hugging Face cache ({cache_dir()}) and HF_HUB_OFFLINE is set; "
                              "unset it to download, or run `moestream pull` while online")
        say(f"{spec} is not in the Hugging Face cache; pulling it")
        found = pull(spec)
    return os.fspath(found[0])
