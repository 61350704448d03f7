"""deploy/ and the Dockerfile against the real server: every number and path the manifests name is checked
against what `moestream serve` does with it, not against a copy of it written here.

The Kustomize output is rendered by kubectl (`kubectl kustomize`), for the base, `deploy/` itself and the example
overlay. Probe paths, the Prometheus path, the HPA's metric and the image's HEALTHCHECK command are tried on a
real server started from the base's own config.toml (with the embedded model, on a free loopback port); each
ConfigMap's config.toml is parsed as `serve --config` parses it; each memory limit must cover what
engine/sizing.py says the config needs for the model its `moestream/sized-for` annotation names. Skipped, with
the reason, where kubectl is missing (not a Python package; one with kustomize v4 or later, i.e. 1.21+, is
needed: Debian 12's kubernetes-client 1.20 is too old)."""

from __future__ import annotations

import functools
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path, PurePosixPath

import pytest
import yaml

from moestream.assets import default_model_path
from moestream.cli.config_file import resolve, serve_parser
from moestream.cli.options import batch_fields, engine_config
from moestream.cli.serve import add_serve_flags
from moestream.engine import OS_RESERVE, memory_need, parse_bytes, preset_size
from moestream.server.serve import FLUSH_S
from tests.deploy.manifests import (DEPLOY, ROOT, container_port, dockerfile, dockerignored, exec_form,
                                    instruction, kubectl, one, quantity, render)
from tests.server.conftest import start_server

TARGETS = {"deploy": DEPLOY, "base": DEPLOY / "base", "example": DEPLOY / "overlays" / "example"}
SIZED_FOR = "moestream/sized-for"


@pytest.fixture(scope="module", params=sorted(TARGETS))
def docs(request) -> list[dict]:
    return render(TARGETS[request.param])


@pytest.fixture(scope="module")
def args(docs, tmp_path_factory):
    """The ConfigMap's config.toml, parsed as `moestream serve --config` parses it."""
    return resolve(_config_file(docs, tmp_path_factory.mktemp("config")), [], serve_parser(add_serve_flags))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server on the base's own config.toml; only what cannot hold here is overridden on the command
    line (which wins over the file): the model (no PVC here), loopback instead of 0.0.0.0, a free port."""
    config = _config_file(_base(), tmp_path_factory.mktemp("served"))
    s = start_server("--config", str(config), "--model", str(default_model_path()), "--host", "127.0.0.1",
                     "--threads", "1")
    yield s
    s.stop()


@functools.cache
def _base() -> list[dict]:
    return render(TARGETS["base"])


def _config_file(docs: list[dict], folder: Path) -> Path:
    path = folder / "config.toml"
    path.write_text(one(docs, "ConfigMap")["data"]["config.toml"])
    return path


def _pod(docs) -> dict:
    return one(docs, "Deployment")["spec"]["template"]


def _container(docs) -> dict:
    [container] = _pod(docs)["spec"]["containers"]
    return container


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


# ---- the settings -------------------------------------------------------------------------------------------


def test_config_is_valid_for_the_engine(args):
    engine_config(args, progress=False, **batch_fields(args))  # raises as `serve` would on a bad value


def test_memory_limit_covers_what_the_config_needs(docs, args):
    preset, qtype = one(docs, "Deployment")["metadata"]["annotations"][SIZED_FOR].split("/")
    assert args.ram_budget not in (None, "auto"), "a sized deployment needs an explicit ram-budget"
    need = memory_need(preset_size(preset, qtype), parse_bytes(args.ram_budget), args.ctx_size, args.max_batch)
    resources = _container(docs)["resources"]
    limit, request = quantity(resources["limits"]["memory"]), quantity(resources["requests"]["memory"])
    assert limit >= need + OS_RESERVE, f"limit {limit / 2**30:.2f} GiB < need {(need + OS_RESERVE) / 2**30:.2f}"
    assert request <= limit


def test_threads_match_the_cpu_request(docs, args):
    assert args.threads == quantity(_container(docs)["resources"]["requests"]["cpu"])


def test_grace_period_covers_prestop_drain_and_flush(docs, args):
    spec, container = _pod(docs)["spec"], _container(docs)
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] > float(sleep[1]) + args.shutdown_grace + FLUSH_S


# ---- paths: config, model, ports ---------------------------------------------------------------------------


def _mount(docs, volume_key: str) -> tuple[dict, dict]:
    """The volume with `volume_key` (configMap, persistentVolumeClaim) and the container's mount of it."""
    [volume] = [v for v in _pod(docs)["spec"]["volumes"] if volume_key in v]
    [mount] = [m for m in _container(docs)["volumeMounts"] if m["name"] == volume["name"]]
    return volume, mount


def test_config_map_is_mounted_where_the_args_point(docs):
    container = _container(docs)
    assert "command" not in container, "command would replace the image's ENTRYPOINT (moestream serve)"
    config = PurePosixPath(container["args"][container["args"].index("--config") + 1])
    volume, mount = _mount(docs, "configMap")
    assert volume["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    assert PurePosixPath(mount["mountPath"]) == config.parent and "subPath" not in mount  # subPath never updates
    assert config.name in one(docs, "ConfigMap")["data"]


def test_model_lies_on_the_claim_mounted_read_only(docs, args):
    volume, mount = _mount(docs, "persistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == one(docs, "PersistentVolumeClaim")["metadata"]["name"]
    assert mount["readOnly"] is True
    assert PurePosixPath(mount["mountPath"]) in PurePosixPath(args.model).parents


def test_service_and_probes_reach_the_configured_port(docs, args):
    container, service = _container(docs), one(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    [port] = service["spec"]["ports"]
    assert container_port(container, port["targetPort"]) == args.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container_port(container, container[probe]["httpGet"]["port"]) == args.port, probe
    assert int(_pod(docs)["metadata"]["annotations"]["prometheus.io/port"]) == args.port


def test_selectors_pick_the_pods(docs):
    labels = _pod(docs)["metadata"]["labels"]
    selectors = [one(docs, "Service")["spec"]["selector"], one(docs, "PodDisruptionBudget")["spec"]["selector"]
                 ["matchLabels"], one(docs, "Deployment")["spec"]["selector"]["matchLabels"]]
    for selector in selectors:
        assert selector.items() <= labels.items()


def test_hpa_scales_this_deployment_within_its_replicas(docs):
    hpa, deployment = one(docs, "HorizontalPodAutoscaler")["spec"], one(docs, "Deployment")
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["maxReplicas"]


# ---- against the real server --------------------------------------------------------------------------------


def test_probe_and_scrape_paths_are_served(docs, server):
    container, pod = _container(docs), _pod(docs)
    paths = {container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    paths.add(pod["metadata"]["annotations"]["prometheus.io/path"])
    for path in sorted(paths):
        assert _get(server.url + path)[0] == 200, path


def test_hpa_metrics_are_exported(docs, server):
    exported = {line.split()[2] for line in _get(server.url + "/metrics")[1].splitlines()
                if line.startswith("# TYPE ")}
    for metric in one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]:
        assert metric["type"] == "Pods", "only per-pod metrics of our own are expected here"
        assert metric["pods"]["metric"]["name"] in exported


# ---- the image ----------------------------------------------------------------------------------------------

DOCKERFILE = ROOT / "Dockerfile"


def test_image_runs_serve_with_the_deployments_args():
    pairs = dockerfile(DOCKERFILE)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert exec_form(instruction(pairs, "ENTRYPOINT")) == ["moestream", "serve"] and "moestream" in scripts
    container = _container(_base())
    assert exec_form(instruction(pairs, "CMD")) == container["args"]


def test_image_port_and_user_match_the_manifests():
    pairs, docs = dockerfile(DOCKERFILE), _base()
    config = tomllib.loads(one(docs, "ConfigMap")["data"]["config.toml"])
    assert instruction(pairs, "EXPOSE") == str(config["port"])
    user = instruction(pairs, "USER").split(":")
    security = _pod(docs)["spec"]["securityContext"]
    assert [int(u) for u in user] == [security["runAsUser"], security["runAsGroup"]][:len(user)]


def test_image_default_config_is_the_bases():
    copies = [arg.split() for key, arg in dockerfile(DOCKERFILE) if key == "COPY" and "--from" not in arg]
    container = _container(_base())
    target = container["args"][container["args"].index("--config") + 1]
    assert ["deploy/base/config.toml", target] in copies


def test_healthcheck_passes_on_a_ready_server(server):
    """The HEALTHCHECK's own command, pointed at the test server instead of the image's port 8000."""
    healthcheck = instruction(dockerfile(DOCKERFILE), "HEALTHCHECK")
    command = exec_form(healthcheck[healthcheck.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"] and "http://127.0.0.1:8000/health" in command[2]
    code = command[2].replace("http://127.0.0.1:8000", server.url)
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


def test_build_context_holds_what_the_build_copies():
    ignore = ROOT / ".dockerignore"
    copied = [arg.split()[:-1] for key, arg in dockerfile(DOCKERFILE, last_stage=False)
              if key == "COPY" and "--from" not in arg]
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    needed = [s for sources in copied for s in sources] + [readme, "moestream/assets/tiny-mixtral-novels.gguf"]
    for source in needed:
        assert not dockerignored(source, ignore), f"{source} is copied but .dockerignore leaves it out"
    for outside in ("tests/conftest.py", ".git/HEAD", "moestream/kernels/cpu/_native.so", "bench", "train"):
        assert dockerignored(outside, ignore), f"{outside} should stay out of the build context"



def test_model_loader_writes_the_claim_as_the_servers_user():
    loader = yaml.safe_load((DEPLOY / "tools" / "model-loader.yaml").read_text())["spec"]
    docs = _base()
    [volume] = loader["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == one(docs, "PersistentVolumeClaim")["metadata"]["name"]
    [mount] = loader["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == _mount(docs, "persistentVolumeClaim")[1]["mountPath"] and not mount.get("readOnly")
    server_security = _pod(docs)["spec"]["securityContext"]
    assert {k: loader["securityContext"][k] for k in ("runAsUser", "runAsGroup", "fsGroup")} == \
        {k: server_security[k] for k in ("runAsUser", "runAsGroup", "fsGroup")}
