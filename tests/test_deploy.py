"""The deployment files stay true: they parse, name only settings that exist, run commands that exist, and
give every compose service a healthcheck. (Images cannot be pulled here, so the stack itself is not run.)"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.stages import load
from core import names
from core.settings import Settings
from deploy import search_attributes

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONVEYOR_IMAGE = re.compile(r"^conveyor:")
REQUIRED_SECRETS = ("STORE_DB_PASSWORD", "TEMPORAL_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "SECRETS_KEY")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def k8s_documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "temporal-values.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def pods() -> list[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every Deployment and Job."""
    found = []
    for doc in k8s_documents():
        if doc["kind"] in {"Deployment", "Job"}:
            found.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
    return found


def conveyor_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every container that runs the Conveyor image, in compose and in Kubernetes."""
    commands = []
    for name, service in compose()["services"].items():
        if CONVEYOR_IMAGE.match(service.get("image", "")):
            commands.append((f"compose {name}", service["command"]))
    for name, spec in pods():
        for container in spec["containers"]:
            if CONVEYOR_IMAGE.match(container["image"]):
                commands.append((f"k8s {name}/{container['name']}", container["command"]))
    return commands


def test_compose_gives_every_service_a_healthcheck() -> None:
    services = compose()["services"]
    expected = {
        "temporal-db",
        "temporal",
        "temporal-ui",
        "conveyor-db",
        "api",
        "worker",
        "stage-worker",
        "otel-collector",
        "prometheus",
        "grafana",
    }
    assert expected <= set(services)
    missing = [name for name, service in services.items() if "healthcheck" not in service]
    assert not missing, f"services without a healthcheck: {missing}"
    for name, service in services.items():
        assert service["healthcheck"]["test"], name


def test_compose_stage_worker_scales() -> None:
    """`--scale stage-worker=N` needs no fixed container name and no host port the replicas would share."""
    stage = compose()["services"]["stage-worker"]
    assert "container_name" not in stage and "ports" not in stage
    assert "--stages" in stage["command"]
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    discovered = [
        config
        for job in scrape["scrape_configs"]
        for config in job.get("dns_sd_configs", [])
        if "stage-worker" in config["names"]
    ]
    assert discovered, "Prometheus must find stage-worker replicas by DNS, not a fixed target"


def test_required_secrets_fail_fast() -> None:
    """A secret the stack needs has no default: compose refuses to start without it."""
    text = COMPOSE.read_text()
    for variable in (*REQUIRED_SECRETS, "CONVEYOR_BOOTSTRAP_ADMIN_KEY"):
        uses = re.findall(rf"\$\{{{variable}([^}}]*)\}}", text)
        assert uses, f"{variable} is not used"
        assert all(use.startswith(":?") for use in uses), f"{variable} must be ${{{variable}:?message}}"
    assert not re.search(r"PASSWORD[A-Z_]*:-", text), "a password with a default"


def setting_of(variable: str) -> str:
    """The Settings field a ``CONVEYOR_*`` variable sets (``CONVEYOR_SECRETS__X`` sets ``secrets``)."""
    name = variable.removeprefix("CONVEYOR_").lower()
    return name.split("__", 1)[0]


@pytest.mark.parametrize(
    "path",
    [
        COMPOSE,
        DEPLOY / "Dockerfile",
        *sorted(K8S.glob("*.yaml")),
        K8S / "README.md",
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_conveyor_variable_is_a_setting(path: Path) -> None:
    variables = set(re.findall(r"\bCONVEYOR_[A-Z0-9_]+", path.read_text()))
    unknown = sorted(v for v in variables if setting_of(v) not in Settings.model_fields)
    assert not unknown, f"{path.name} names settings that do not exist: {unknown}"
    for variable in variables:
        if "__" in variable:  # nested: only dict settings take CONVEYOR_<FIELD>__<KEY>
            annotation = str(Settings.model_fields[setting_of(variable)].annotation)
            assert annotation.startswith("dict"), variable


def test_setting_values_in_deploy_files_are_valid() -> None:
    """The values the ConfigMap and compose give are ones Settings accepts (typos fail at start otherwise)."""
    [config] = [d for d in k8s_documents() if d["kind"] == "ConfigMap"]
    Settings(**{setting_of(k): v for k, v in config["data"].items()})
    for service in compose()["services"].values():
        environment = service.get("environment", {})
        values = {
            setting_of(k): v
            for k, v in environment.items()
            if k.startswith("CONVEYOR_") and "${" not in str(v) and "__" not in k
        }
        Settings(**values)  # raises, naming the field, on a value Conveyor would refuse


def worker_help() -> str:
    run = subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), "--help"], capture_output=True, text=True, check=True
    )
    return run.stdout


def test_containers_run_commands_that_exist() -> None:
    commands = conveyor_commands()
    assert len(commands) >= 5
    flags = set(re.findall(r"--[a-z-]+", worker_help()))
    stages = set(load(Settings().stage_modules))
    for where, argv in commands:
        if argv[0] == "uvicorn":
            module, _, attribute = argv[1].partition(":")
            assert hasattr(importlib.import_module(module), attribute), where
        elif argv[:2] == ["python", "worker.py"]:
            used = [a for a in argv[2:] if a.startswith("--")]
            assert set(used) <= flags, f"{where}: {used} not all in worker.py --help"
            if "--stages" in argv:
                chosen = argv[argv.index("--stages") + 1].split(",")
                assert chosen == ["all"] or set(chosen) <= stages, where
        elif argv[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(argv[2]) is not None, where
        else:
            pytest.fail(f"{where} runs {argv}, which this test does not know")


def test_one_stage_deployment_per_registered_stage() -> None:
    served = []
    for name, spec in pods():
        for container in spec["containers"]:
            argv = container["command"]
            if "--stages" in argv:
                served.append(argv[argv.index("--stages") + 1])
                assert name == f"conveyor-stage-{served[-1].replace('_', '-')}"
    modules = Settings().stage_modules
    # Other tests of this process register processors of their own: count the shipped modules' only.
    shipped = [name for name, p in load(modules).items() if getattr(p.process, "__module__", "") in modules]
    assert sorted(served) == sorted(shipped)


def test_k8s_references_resolve() -> None:
    documents = k8s_documents()
    for doc in documents:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
    defined = {(doc["kind"], doc["metadata"]["name"]) for doc in documents}
    [secret] = [d for d in documents if d["kind"] == "Secret"]
    for doc in documents:
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), doc["metadata"]["name"]
    for name, spec in pods():
        for volume in spec.get("volumes", []):
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert ("PersistentVolumeClaim", claim) in defined, name
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in defined, name
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in defined, name
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and "optional" not in ref, name
                    assert ref["key"] in secret["stringData"], f"{name}: {ref['key']}"
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    assert "conveyor-api" in services


def test_temporal_helm_values_use_postgres() -> None:
    values = yaml.safe_load((K8S / "temporal-values.yaml").read_text())
    persistence = values["server"]["config"]["persistence"]
    assert persistence["default"]["sql"]["driver"] == "postgres12"
    assert persistence["visibility"]["sql"]["driver"] == "postgres12"
    assert values["cassandra"]["enabled"] is False


def test_telemetry_configs_parse_and_connect() -> None:
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    for pipeline in collector["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in collector[kind], f"{kind} {component} is used but not defined"
    # The collector listens where Conveyor is told to send spans.
    otlp = compose()["services"]["api"]["environment"]["CONVEYOR_OTLP_ENDPOINT"]
    assert otlp.endswith(":4318") and collector["receivers"]["otlp"]["protocols"]["http"]

    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    services = compose()["services"]
    for job in scrape["scrape_configs"]:
        hosts = [t.split(":")[0] for c in job.get("static_configs", []) for t in c["targets"]]
        hosts += [n for c in job.get("dns_sd_configs", []) for n in c["names"]]
        assert hosts and set(hosts) <= set(services), job["job_name"]
    worker_port = services["worker"]["environment"]["CONVEYOR_WORKER_METRICS_ADDRESS"].rsplit(":", 1)[1]
    ports = {c["port"] for job in scrape["scrape_configs"] for c in job.get("dns_sd_configs", [])}
    assert ports == {int(worker_port)}


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    uids = {source["uid"] for source in sources["datasources"]}
    providers = yaml.safe_load((provisioning / "dashboards" / "conveyor.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    mounts = compose()["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "conveyor.json").read_text())
    assert dashboard["uid"] == "conveyor"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
    # Which metric names the queries may use is checked against a live scrape in test_telemetry.py.


def test_dockerfile_and_ignore() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert '"uvicorn", "api.app:app"' in dockerfile
    assert "USER conveyor" in dockerfile and "HEALTHCHECK" in dockerfile
    assert compose()["services"]["api"]["build"]["dockerfile"] == "deploy/Dockerfile"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".data"} <= set(ignored)


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode != 0,
    reason="docker compose is not installed",
)
def test_docker_compose_config_accepts_the_file() -> None:
    env = {"PATH": "/usr/bin:/bin", **dict.fromkeys(REQUIRED_SECRETS, "x")}
    env["CONVEYOR_BOOTSTRAP_ADMIN_KEY"] = "cvk_a_b"
    ok = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], env=env, check=False)
    assert ok.returncode == 0
    missing = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode != 0 and "set STORE_DB_PASSWORD" in missing.stderr


def test_search_attribute_setup_matches_names() -> None:
    wanted = search_attributes.wanted()
    assert set(wanted) == {key.name for key in names.SEARCH_ATTRIBUTES}


async def test_search_attribute_setup_adds_only_missing_ones(temporal_env: WorkflowEnvironment) -> None:
    namespace = f"setup-{uuid.uuid4().hex[:8]}"
    base = temporal_env.client
    await base.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86_400)
        )
    )
    client = Client(base.service_client, namespace=namespace)
    first = await search_attributes.register(client)
    assert first == sorted(key.name for key in names.SEARCH_ATTRIBUTES)
    assert await search_attributes.register(client) == []
