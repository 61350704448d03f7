"""deploy/sharded (expert sharding on Kubernetes) against torchrun's and moestream serve's own parsers: the
StatefulSet's torchrun arguments parse with torchrun's parser, name as many nodes as there are replicas and pod
0's stable name under the headless Service as the master; what torchrun then runs parses as `moestream serve`,
with the ConfigMap's config.toml, and asks for expert sharding; the HTTP Service reaches rank 0 only."""

from __future__ import annotations

import pytest

from moestream.cli.config_file import resolve, serve_parser
from moestream.cli.serve import add_serve_flags
from tests.deploy.manifests import DEPLOY, container_port, one, render


@pytest.fixture(scope="module")
def docs():
    return render(DEPLOY / "sharded")


def _container(docs) -> dict:
    [container] = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return container


def _torchrun(docs):
    from torch.distributed.run import get_args_parser

    container = _container(docs)
    assert container["command"] == ["torchrun"]
    assert "$(POD_INDEX)" in container["args"]  # Kubernetes expands it from the env below: pod 1 gets "1"
    return get_args_parser().parse_args([a.replace("$(POD_INDEX)", "1") for a in container["args"]])


def test_torchrun_meets_at_pod_zero_with_one_node_per_replica(docs):
    sts, run = one(docs, "StatefulSet"), _torchrun(docs)
    assert run.nnodes == str(sts["spec"]["replicas"]) and run.nproc_per_node == "1"
    assert run.node_rank == 1
    [env] = [e for e in _container(docs)["env"] if e["name"] == "POD_INDEX"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert run.master_addr == f"{sts['metadata']['name']}-0.{sts['spec']['serviceName']}"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"  # the ranks must start together to meet
    [headless] = [s for s in docs if s["kind"] == "Service" and s["metadata"]["name"] == sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert any(p["port"] == run.master_port for p in headless["spec"]["ports"])


def test_every_rank_runs_serve_with_the_config_and_expert_sharding(docs, tmp_path):
    run = _torchrun(docs)
    assert run.module and run.training_script == "moestream" and run.training_script_args[0] == "serve"
    config = tmp_path / "config.toml"
    config.write_text(one(docs, "ConfigMap")["data"]["config.toml"])
    argv = [a.replace("/etc/moestream/config.toml", str(config)) for a in run.training_script_args[1:]]
    args = resolve(str(config), argv, serve_parser(add_serve_flags))
    assert args.shard == "experts" and args.shard_timeout > 0
    mounts = {m["name"]: m["mountPath"] for m in _container(docs)["volumeMounts"]}
    assert run.training_script_args[1:] == ["--config", f"{mounts['config']}/config.toml"]
    assert args.model.startswith(mounts["models"] + "/")


def test_the_http_service_reaches_rank_zero_only(docs):
    [http] = [s for s in docs if s["kind"] == "Service" and s["metadata"]["name"] == "moestream"]
    assert http["spec"]["selector"]["apps.kubernetes.io/pod-index"] == "0"
    container = _container(docs)
    assert container_port(container, http["spec"]["ports"][0]["targetPort"]) == 8000
