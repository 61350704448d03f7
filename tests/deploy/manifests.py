"""Reading what deploy/ and the Dockerfile say, for tests/deploy: rendered Kustomize output as plain dicts,
Kubernetes quantities as numbers, Dockerfile instructions as (keyword, argument) pairs, .dockerignore as a
predicate. Only as much of each format as our own files use; a construct outside that fails loudly (an unknown
quantity suffix, a Dockerfile instruction in shell form where exec form is expected), never reads as a default."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def kubectl() -> str:
    """These machines have kubectl (with kustomize built in); without it the manifests cannot be checked, which
    is a failure, not a skip."""
    found = shutil.which("kubectl")
    assert found, "kubectl is not installed: `kubectl kustomize deploy/` cannot be checked"
    return found


def render(kustomization: Path) -> list[dict]:
    """`kubectl kustomize DIR` as a list of objects (kubectl has kustomize built in)."""
    out = subprocess.run([kubectl(), "kustomize", str(kustomization)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity ('13Gi', '13312Mi', '500m', '8', '1e3') -> its plain value (bytes, cores)."""
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)(?:[eE]([+-]?[0-9]+))?([KMGTPE]i|[mkMGTPE]?)", str(text))
    assert m, f"not a Kubernetes quantity: {text!r}"
    number, exponent, suffix = m.groups()
    scale = _BINARY.get(suffix) or _DECIMAL[suffix]
    return float(number) * 10 ** int(exponent or 0) * scale


def container_port(container: dict, port: int | str) -> int:
    """A probe's or a Service's port (a number or a container port's name) as the number it reaches."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"port name {port!r} is not one of the container's ports {named}"
    return named[port]


def dockerfile(path: Path, last_stage: bool = True) -> list[tuple[str, str]]:
    """The final stage's instructions (or every stage's) as (KEYWORD, argument text), continuation lines
    joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = [tuple(line.strip().split(None, 1)) for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    start = [i for i, p in enumerate(pairs) if p[0].upper() == "FROM"][-1] if last_stage else 0
    return [(p[0].upper(), p[1] if len(p) > 1 else "") for p in pairs[start:]]


def instruction(pairs: list[tuple[str, str]], keyword: str) -> str:
    found = [arg for key, arg in pairs if key == keyword]
    assert found, f"the Dockerfile's final stage has no {keyword}"
    return found[-1]  # as Docker does: the last one counts


def exec_form(argument: str) -> list[str]:
    """An exec-form argument (`["moestream", "serve"]`) as its list; shell form is refused (it would put a shell
    in front of moestream as PID 1, and signals would reach the shell, not the server)."""
    value = json.loads(argument)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {argument}"
    return value


def dockerignored(path: str, ignore_file: Path) -> bool:
    """Whether .dockerignore keeps `path` out of the build context: the last pattern matching it or a folder
    above it decides, `!` re-includes. fnmatch's `*` also crosses `/`, looser than Docker's; our whitelist
    (`*`, then `!` entries) reads the same either way."""
    patterns = [line.strip() for line in ignore_file.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = Path(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated, glob = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(prefix, glob) for prefix in prefixes):
            ignored = not negated
    return ignored
