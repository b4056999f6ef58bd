"""The distributed shape: docker-compose.yml validated by docker-compose itself.

No Docker engine runs here; `docker-compose config` parses, interpolates and
validates the file as a deployment would, which is what can be checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parents[2]
SECRETS = {
    "POSTGRES_PASSWORD": "pw",
    "REDIS_PASSWORD": "rpw",
    "FLOWER_BASIC_AUTH": "ops:fpw",
    "OFFPOST_APP_ID": "1234567890",
    "OFFPOST_APP_SECRET": "app-secret",
    "OFFPOST_ENCRYPTION_KEYS": "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=",
    "OFFPOST_S3_ACCESS_KEY_ID": "s3-key-id",
    "OFFPOST_S3_SECRET_ACCESS_KEY": "s3-secret",
}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = "docker-compose is not installed (Debian package docker-compose)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    clean = {
        k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("OFFPOST_")
    }
    return subprocess.run(
        [binary, "-f", str(REPO / "docker-compose.yml"), "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)
    return parsed


def test_every_role_is_there(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "dispatcher",
        "worker",
        "webhooks",
        "flower",
        "prometheus",
        "seaweedfs",
    }
    services = config["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["dispatcher"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"][0] == "worker"
    # Deliveries have their own role: a slow receiver never holds a publishing slot.
    assert services["webhooks"]["command"][0] == "webhooks"
    assert services["api"]["command"][:1] == ["api"]


def test_roles_wait_for_healthy_dependencies(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("postgres", "redis", "api", "worker", "webhooks", "dispatcher"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for role in ("api", "dispatcher", "worker", "webhooks"):
        depends = services[role]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", role
        assert depends["redis"]["condition"] == "service_healthy", role
    assert services["flower"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["seaweedfs"]["healthcheck"]["test"]
    # The roles that read or write uploaded media wait for the media store.
    for role in ("api", "dispatcher", "worker"):
        depends = services[role]["depends_on"]
        assert depends["seaweedfs"]["condition"] == "service_healthy", role


def test_media_live_in_the_seaweedfs_bucket(config: dict[str, Any]) -> None:
    services = config["services"]
    seaweedfs = services["seaweedfs"]
    assert seaweedfs["image"].startswith("chrislusf/seaweedfs")
    assert seaweedfs["command"][:2] == ["server", "-s3"]
    assert seaweedfs["environment"]["AWS_ACCESS_KEY_ID"] == "s3-key-id"
    assert seaweedfs["environment"]["AWS_SECRET_ACCESS_KEY"] == "s3-secret"
    assert "ports" not in seaweedfs
    for role in ("api", "dispatcher", "worker"):
        env = services[role]["environment"]
        assert env["OFFPOST_MEDIA_STORE"] == "s3", role
        assert env["OFFPOST_S3_ENDPOINT_URL"] == "http://seaweedfs:8333", role
        assert env["OFFPOST_S3_BUCKET"] == "offpost-media", role
        assert env["OFFPOST_S3_ACCESS_KEY_ID"] == "s3-key-id", role
        assert env["OFFPOST_S3_SECRET_ACCESS_KEY"] == "s3-secret", role


def test_roles_share_the_interpolated_settings(config: dict[str, Any]) -> None:
    for role in ("migrate", "api", "dispatcher", "worker", "webhooks"):
        env = config["services"][role]["environment"]
        assert (
            env["OFFPOST_DATABASE_URL"] == "postgresql+psycopg://offpost:pw@postgres:5432/offpost"
        )
        assert env["OFFPOST_BROKER_URL"] == "redis://:rpw@redis:6379/0"
        assert env["OFFPOST_APP_ID"] == SECRETS["OFFPOST_APP_ID"]
        assert env["OFFPOST_ENCRYPTION_KEYS"] == SECRETS["OFFPOST_ENCRYPTION_KEYS"]


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_a_missing_secret_stops_with_its_name(missing: str) -> None:
    result = compose_config({k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def test_only_this_machine_reaches_the_api_flower_and_prometheus_and_nothing_reaches_redis(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    for name in ("api", "flower", "prometheus"):
        [port] = services[name]["ports"]
        # docker-compose renders "ip:host:container"; newer Compose a mapping.
        host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
        assert host_ip == "127.0.0.1", (name, port)
    assert "ports" not in services["redis"]
    assert "ports" not in services["postgres"]
    # The roles' /metrics are for Prometheus, on the compose network only.
    for name in ("worker", "webhooks", "dispatcher"):
        assert "ports" not in services[name], name


def test_redis_and_flower_need_their_passwords(config: dict[str, Any]) -> None:
    services = config["services"]
    assert services["redis"]["command"][-2:] == ["--requirepass", "rpw"]
    flower = services["flower"]["environment"]
    assert flower["FLOWER_BASIC_AUTH"] == "ops:fpw"
    assert flower["CELERY_BROKER_URL"] == "redis://:rpw@redis:6379/0"
    # Every URL that names Redis carries the password.
    for name, service in services.items():
        for value in (service.get("environment") or {}).values():
            if "redis:6379" in str(value):
                assert ":rpw@redis:6379" in str(value), name


def test_prometheus_scrapes_every_role(config: dict[str, Any]) -> None:
    services = config["services"]
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    mounts = []
    for volume in prometheus["volumes"]:
        # docker-compose renders "source:target:mode"; newer Compose a mapping.
        if isinstance(volume, dict):
            mounts.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
        else:
            source, target, *mode = volume.split(":")
            mounts.append((source, target, mode == ["ro"]))
    config_dir = str(REPO / "deploy" / "prometheus")
    assert (config_dir, "/etc/prometheus", True) in mounts
    assert (Path(config_dir) / "prometheus.yml").is_file()
    # Each scaled role serves /metrics on 9100, on every address of its container.
    for role in ("worker", "webhooks", "dispatcher"):
        env = services[role]["environment"]
        assert env["OFFPOST_METRICS_PORT"] == "9100", role
        assert env["OFFPOST_METRICS_HOST"] == "0.0.0.0", role
        # The metrics settings come on top of the shared ones, not instead of them.
        assert env["OFFPOST_BROKER_URL"] == "redis://:rpw@redis:6379/0", role
    # The API serves its own /metrics on its port; the one-shot migration none.
    for role in ("api", "migrate"):
        assert "OFFPOST_METRICS_PORT" not in services[role]["environment"], role
