"""compose.yaml cannot run here (no Docker engine): check its shape and wiring instead."""

from __future__ import annotations

import configparser
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from tests.core.cli_tree import cli_command
from uptake.services import SERVICES
from uptake.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = {s.name: list(s.command) for s in SERVICES}  # compose service -> its command


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _runs_uptake(service: dict) -> bool:
    """Runs the image's ``uptake`` entrypoint (the mlflow service shares the image, not it)."""
    return service.get("image") == "uptake:latest" and "entrypoint" not in service


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_services_present(compose: dict) -> None:
    assert set(compose["services"]) == {
        "kafka",
        "postgres",
        "mlflow",
        "mlflow-users",
        *APP_SERVICES,
        "serving-vllm",  # profile vllm (GPU serving), checked on its own below
    }


def test_every_uptake_service_runs_a_command_the_cli_has(compose: dict) -> None:
    runs_uptake = {n: s for n, s in compose["services"].items() if _runs_uptake(s)}
    assert runs_uptake
    for name, service in runs_uptake.items():
        command = service.get("command")
        assert command, f"{name} runs the image's default command"
        assert cli_command(command) is not None, (
            f"{name} runs `uptake {' '.join(command)}`, no such command"
        )


def test_uptake_services_are_the_service_list(compose: dict) -> None:
    runs_uptake = {n: s["command"] for n, s in compose["services"].items() if _runs_uptake(s)}
    assert runs_uptake == APP_SERVICES


def test_kafka_is_official_image_in_kraft_single_node(compose: dict) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_infrastructure_has_healthchecks_and_volumes(compose: dict) -> None:
    for name in ("kafka", "postgres", "mlflow"):
        service = compose["services"][name]
        assert service["healthcheck"]["test"], name
        assert service.get("volumes"), name
        for volume in service["volumes"]:
            assert volume.split(":")[0] in compose["volumes"], volume


def test_mlflow_uses_postgres_and_webhooks(compose: dict) -> None:
    mlflow = compose["services"]["mlflow"]
    args = " ".join(mlflow["command"])
    store = re.search(r"--backend-store-uri=(\S+)", args)
    assert store and store.group(1).startswith("postgresql+psycopg://mlflow:")
    assert "@postgres:5432/mlflow" in store.group(1)
    assert _env(compose["services"]["postgres"])["POSTGRES_DB"] == "mlflow"
    assert "--artifacts-destination=/var/lib/mlflow/artifacts" in args
    env = _env(mlflow)
    assert env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"].startswith("${")  # never a literal key
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_app_services_share_one_image_and_are_wired(compose: dict) -> None:
    services = compose["services"]
    kafka_listener = _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
    mlflow_port = re.search(r"--port=(\d+)", " ".join(services["mlflow"]["command"])).group(1)
    images = {services[name]["image"] for name in APP_SERVICES} | {services["mlflow"]["image"]}
    assert images == {"uptake:latest"}
    for name, command in APP_SERVICES.items():
        service = services[name]
        assert service["command"] == command
        env = _env(service)
        assert env["UPTAKE_KAFKA_BOOTSTRAP"] == kafka_listener
        assert env["UPTAKE_MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow_port}"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert service["depends_on"]["mlflow"]["condition"] == "service_healthy"


def _mounted_config(service: dict) -> Path:
    """The host file mounted at the service's UPTAKE_CONFIG (compose's default when unset)."""
    target = _env(service)["UPTAKE_CONFIG"]
    for volume in service["volumes"]:
        source, _, rest = volume.rpartition(f":{target}")
        if source and rest in ("", ":ro"):
            default = re.fullmatch(r"\$\{\w+:-(.+)\}", source)
            return ROOT / (default.group(1) if default else source)
    raise AssertionError(f"{target} is not mounted")


def test_app_env_and_mounted_config_are_valid_uptake_configuration(
    compose: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in APP_SERVICES:
        service = compose["services"][name]
        config = _mounted_config(service)
        assert config.is_file(), f"{name} mounts {config}, which the repository lacks"
        for key, value in _env(service).items():
            if key.startswith("UPTAKE_") and key != "UPTAKE_CONFIG":
                monkeypatch.setenv(key, "secret-from-env" if value.startswith("${") else value)
        settings = load_settings(config)
        assert settings.kafka_bootstrap == "kafka:9092"
        assert str(settings.home) == "/var/lib/uptake"
        assert settings.sources and settings.registry.gate.mode == "manual"


def test_secrets_are_references_not_literals(compose: dict) -> None:
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            if key.endswith("_ENV"):
                continue  # the name of the variable that holds a secret, not the secret
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN", "KEY")):
                assert value.startswith("${"), f"{name}.{key} holds a literal secret"


def test_dockerfile_installs_cpu_or_cuda_torch_first_and_runs_uptake() -> None:
    text = (ROOT / "Dockerfile").read_text()
    torch_at = text.index('pip install "torch==')
    assert torch_at < text.index('pip install ".[postgres,auth]"')
    assert 'ENTRYPOINT ["uptake"]' in text
    assert "USER uptake" in text
    for package in ("uptake", "watcher", "pipeline", "registry", "serving"):
        assert f"COPY {package} ./{package}" in text


def test_watcher_exposes_webhook_and_health(compose: dict) -> None:
    watcher = compose["services"]["watcher"]
    env = _env(watcher)
    assert env["UPTAKE_WATCHER__HOST"] == "0.0.0.0"
    assert f"{env['UPTAKE_WATCHER__PORT']}:{env['UPTAKE_WATCHER__PORT']}" in watcher["ports"]
    assert "/healthz" in " ".join(watcher["healthcheck"]["test"])


def _ini_in_image() -> configparser.ConfigParser:
    """The basic-auth ini the Dockerfile writes (printf of one quoted line per ini line)."""
    text = (ROOT / "Dockerfile").read_text()
    block = re.search(r"printf '%s\\n' (.+?) > (\S+)", text, re.S)
    assert block, "the Dockerfile writes no basic-auth ini"
    lines = re.findall(r"'([^']*)'", block.group(1))
    parser = configparser.ConfigParser()
    parser.read_string("\n".join(lines))
    parser.path = block.group(2)  # type: ignore[attr-defined]
    return parser


def test_mlflow_is_not_published_and_runs_basic_auth(compose: dict) -> None:
    """Anyone who reached :5000 could approve or move champion: no host port, logins on."""
    mlflow = compose["services"]["mlflow"]
    assert "ports" not in mlflow
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert not str(port).split(":")[-1].startswith("5000"), f"{name} publishes {port}"
    assert "--app-name=basic-auth" in mlflow["command"]
    env = _env(mlflow)
    ini = _ini_in_image()
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == ini.path  # type: ignore[attr-defined]
    assert ini["mlflow"]["default_permission"] == "READ"
    store = ini["mlflow"]["database_uri"]
    assert store.startswith("sqlite:////var/lib/mlflow/auth/")
    assert any(v.endswith(":/var/lib/mlflow/auth") for v in mlflow["volumes"])  # kept
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[key].startswith("${") and ":?" in env[key], key  # required, from env
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])  # open under basic-auth


def test_services_log_in_to_mlflow_with_credentials_from_env(compose: dict) -> None:
    services = compose["services"]
    users = services["mlflow-users"]
    assert users["entrypoint"] == ["python", "-m", "uptake.stack.mlflow_auth"]
    assert importlib.util.find_spec("uptake.stack.mlflow_auth") is not None
    init = _env(users)
    mlflow_env = _env(services["mlflow"])
    assert init["MLFLOW_TRACKING_USERNAME"] == mlflow_env["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert init["MLFLOW_TRACKING_PASSWORD"] == mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert users["depends_on"]["mlflow"]["condition"] == "service_healthy"
    for name in APP_SERVICES:
        env = _env(services[name])
        assert env["MLFLOW_TRACKING_USERNAME"] == init["MLFLOW_SERVICE_USERNAME"], name
        assert env["MLFLOW_TRACKING_PASSWORD"] == init["MLFLOW_SERVICE_PASSWORD"], name
        assert re.fullmatch(r"\$\{\w+(:-\w+)?\}", env["MLFLOW_TRACKING_USERNAME"]), name
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", env["MLFLOW_TRACKING_PASSWORD"]), name
        depends = services[name]["depends_on"]["mlflow-users"]
        assert depends["condition"] == "service_completed_successfully", name


def test_serving_publishes_the_api_and_answers_health(compose: dict) -> None:
    serving = compose["services"]["serving"]
    assert serving["command"] == ["serve"]
    env = _env(serving)
    assert env["UPTAKE_SERVING__HOST"] == "0.0.0.0"
    port = env["UPTAKE_SERVING__PORT"]
    assert f"{port}:{port}" in [str(p).split()[0].strip('"') for p in serving["ports"]]
    assert f"127.0.0.1:{port}/healthz" in " ".join(serving["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["serving", "serving-vllm"])
def test_serving_on_every_interface_requires_a_key_from_env(
    compose: dict, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Published on every interface: the key comes from the environment (compose refuses to
    start without it), and serving's own start-up check passes only because it is set."""
    from serving.service import refuse_open_exposure
    from uptake.errors import ConfigError

    env = _env(compose["services"][name])
    variable = env["UPTAKE_SERVING__API_KEY_ENV"]
    assert re.fullmatch(rf"\$\{{{variable}:\?.+\}}", env[variable]), env[variable]
    for key, value in env.items():
        if key.startswith("UPTAKE_") and key != "UPTAKE_CONFIG":
            plain = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
            monkeypatch.setenv(key, "secret-from-env" if plain.startswith("${") else plain)
    settings = load_settings(_mounted_config(compose["services"][name]))
    assert settings.serving.host == "0.0.0.0" and not settings.serving.allow_unauthenticated
    key = settings.serving.api_key()
    assert key == "secret-from-env"
    refuse_open_exposure(settings.serving.host, key, allow=False)  # passes: a key is set
    with pytest.raises(ConfigError, match="no API key"):
        refuse_open_exposure(settings.serving.host, None, allow=False)


def test_vllm_profile_serves_with_the_vllm_engine_on_a_gpu(
    compose: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose["services"]["serving-vllm"]
    assert service["profiles"] == ["vllm"]  # not part of a plain `docker compose up`
    assert service["command"] == ["serve", "--engine", "vllm"]
    assert cli_command(service["command"]) is not None
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert any(str(p).endswith(":8000") for p in service["ports"])
    assert "/healthz" in " ".join(service["healthcheck"]["test"])
    inline = service["build"]["dockerfile_inline"]
    assert "FROM $${VLLM_IMAGE}" in inline  # $$: compose must not interpolate it away
    for package in ("uptake", "watcher", "pipeline", "registry", "serving"):
        assert f"COPY {package} ./{package}" in inline
    assert 'ENTRYPOINT ["/opt/uptake/bin/uptake"]' in inline and "USER uptake" in inline
    for key, value in _env(service).items():  # compose's ${VAR:-default} as its default
        if key.startswith("UPTAKE_") and key != "UPTAKE_CONFIG":
            plain = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
            monkeypatch.setenv(key, "secret-from-env" if plain.startswith("${") else plain)
    settings = load_settings(_mounted_config(service))
    assert settings.serving.engine == "vllm"
    assert settings.serving.vllm.argv() == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert settings.serving.vllm.extra_args == ["--gpu-memory-utilization", "0.45"]
    assert settings.serving.host == "0.0.0.0"


def test_worker_reserves_a_gpu_and_mounts_the_tracks_files(compose: dict) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    settings = load_settings(_mounted_config(worker))
    assert settings.tracks, "the worker's config names no track: it would exit 2"
    target_dir = Path(_env(worker)["UPTAKE_CONFIG"]).parent
    for track in settings.tracks:
        for path in (track.recipe, track.suite):
            assert path.is_file(), path
            inside = target_dir / path.relative_to(ROOT / "examples")
            target = f":{inside.parent}"
            mounted = [v for v in worker["volumes"] if v.endswith((target, f"{target}:ro"))]
            assert mounted, f"{inside} is not mounted into the worker"
