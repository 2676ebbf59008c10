"""The deployment files under infra/ parse, and stay in step with the code: the images carry
the Ray and Python versions installed here, the ports are the ones the code defaults to, and
every variable they set is one that vidistill (or Ray, MLflow, PostgreSQL) reads."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
IMAGE = "vidistill:0.1.0"
VIDISTILL_SERVICES = ("mlflow", "ray-head", "gpu-worker", "dispatcher")

# Variables of other programs the deployment sets, with who reads them.
THIRD_PARTY = {
    "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH",                           # Ray (token authentication)
    "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD_FILE",         # the postgres image
}


def load(name: str):
    return yaml.safe_load((INFRA / name).read_text())


def code_variables() -> set[str]:
    """Environment variables the vidistill code reads."""
    names = set()
    for path in [*(ROOT / "platform").rglob("*.py"), ROOT / "trainers" / "tracking.py"]:
        text = path.read_text()
        names |= set(re.findall(r"""(?:environ\.get|environ\[|env\.get|env\[|_number\(env,|_flag\(env,)\s*\(?\s*["']([A-Z][A-Z0-9_]+)["']""", text))
    return names


def mlflow_variables() -> set[str]:
    import mlflow.environment_variables as variables

    return {value.name for value in vars(variables).values() if hasattr(value, "name") and hasattr(value, "get")}


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (INFRA / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def compose_env(service: dict) -> dict[str, str]:
    return {str(k): str(v) for k, v in (service.get("environment") or {}).items()}


def kube_env(container: dict) -> dict[str, str]:
    return {item["name"]: str(item["value"]) for item in container.get("env", [])}


def known(name: str) -> bool:
    return name in code_variables() or name in THIRD_PARTY or name in mlflow_variables()


def test_code_variables_are_found():
    # The collector must see the settings the code reads, or the checks below prove nothing.
    assert {"VIDISTILL_HOME", "VIDISTILL_DB_URL", "VIDISTILL_DB_URL_FILE", "RAY_ADDRESS", "MLFLOW_TRACKING_URI",
            "VIDISTILL_ADMIN", "RAY_AUTH_TOKEN_PATH"} <= code_variables()
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD",
            "MLFLOW_AUTH_CONFIG_PATH"} <= mlflow_variables()


def test_compose_services_images_and_ports():
    compose = load("compose.yaml")
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "ray-head", "gpu-worker", "dispatcher"}
    for name in VIDISTILL_SERVICES:
        assert services[name]["image"] == IMAGE
        assert services[name]["build"]["dockerfile"] == "infra/Dockerfile"
        assert (INFRA / services[name]["build"]["context"] / services[name]["build"]["dockerfile"]).is_file()
    assert services["postgres"]["image"] == "postgres:15"  # the server version the tests run against

    from vidistill.platform.settings import Settings

    ports = {name: {str(p).split(":")[-1] for p in service.get("ports", [])} for name, service in services.items()}
    dashboard = str(Settings.from_env({}).ray_dashboard_port)
    assert dashboard == "8265" and {"6379", dashboard} <= ports["ray-head"]
    head = " ".join(services["ray-head"]["command"])
    assert "--head" in head and "--port=6379" in head and f"--dashboard-port={dashboard}" in head
    assert "--num-gpus=0" in head  # GPU work goes to the workers
    assert "--address=ray-head:6379" in services["gpu-worker"]["command"]
    assert ports["postgres"] == {"5432"}
    ui_port = next(p for p in __import__("vidistill.platform.cli.ui", fromlist=["ui"]).ui.params if p.name == "port")
    assert ports["mlflow"] == {str(ui_port.default)} == {"5000"}

    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_variables_point_vidistill_at_the_services():
    compose = load("compose.yaml")
    services = compose["services"]
    for name in ("ray-head", "gpu-worker", "dispatcher"):
        env = compose_env(services[name])
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["VIDISTILL_DB_URL_FILE"].startswith("/run/secrets/")
        assert "VIDISTILL_DB_URL" not in env  # the URL holds the password: only its file
        assert env["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token"
        unknown = [key for key in env if not known(key)]
        assert unknown == [], f"{name} sets variables nothing reads: {unknown}"
    assert compose_env(services["dispatcher"])["RAY_ADDRESS"] == "http://ray-head:8265"
    assert set(compose_env(services["postgres"])) <= THIRD_PARTY


def test_compose_secrets_are_files_made_by_make_secrets():
    compose = load("compose.yaml")
    declared = compose["secrets"]
    made = set(re.findall(r"^keep (\w+)", (INFRA / "make-secrets.sh").read_text(), re.M))
    assert set(declared) == made
    for secret in declared.values():
        assert secret["file"].startswith("./secrets/")
    for name, service in compose["services"].items():
        for item in service.get("secrets", []):
            assert (item["source"] if isinstance(item, dict) else item) in declared, name
    assert (INFRA / ".gitignore").read_text().split() == ["secrets/"]


def test_mlflow_server_runs_with_basic_auth_on_postgresql():
    compose = load("compose.yaml")
    script = (INFRA / "mlflow" / "start-server.sh").read_text()
    assert compose["services"]["mlflow"]["command"][-1] == "/opt/vidistill/infra/mlflow/start-server.sh"
    assert "--app-name basic-auth" in script and "--port 5000" in script
    assert "--artifacts-destination" in script
    for variable in re.findall(r"export (MLFLOW_[A-Z_]+)", script):
        assert variable in mlflow_variables() or variable == "MLFLOW_BACKEND_STORE_URI", variable
    assert "postgresql+psycopg://" in (INFRA / "make-secrets.sh").read_text()
    import configparser

    ini = configparser.ConfigParser()
    ini.read(INFRA / "mlflow" / "basic_auth.ini")
    assert "admin_password" not in ini["mlflow"]  # it comes from the secret, never a file in git
    assert set(re.findall(r"CREATE DATABASE (\w+)", (INFRA / "postgres" / "init.sql").read_text())) == {
        "mlflow", "mlflow_auth"}


def test_image_carries_the_installed_ray_and_python():
    import ray

    dockerfile = (INFRA / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert base == f"rayproject/ray:{ray.__version__}-{python}-gpu"
    assert "torch==2.13.0" in dockerfile and '"mlflow[auth]' in dockerfile
    assert load("kuberay/raycluster.yaml")["spec"]["rayVersion"] == ray.__version__


def test_kuberay_cluster_has_a_gpu_worker_group_and_the_same_variables():
    cluster = load("kuberay/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-port"] == "8265" and head["rayStartParams"]["num-gpus"] == "0"
    containers = {c["name"]: c for c in head["template"]["spec"]["containers"]}
    assert {c["image"] for c in containers.values()} == {IMAGE}
    assert {p["containerPort"] for p in containers["ray-head"]["ports"]} >= {6379, 8265}
    assert kube_env(containers["dispatcher"])["RAY_ADDRESS"] == "http://127.0.0.1:8265"
    (group,) = cluster["spec"]["workerGroupSpecs"]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["image"] == IMAGE
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == int(group["rayStartParams"]["num-gpus"]) == 1
    for container in [*containers.values(), worker]:
        env = kube_env(container)
        assert "VIDISTILL_DB_URL" not in env and env["VIDISTILL_DB_URL_FILE"].startswith("/run/secrets/")
        assert [k for k in env if not known(k)] == []


def test_cluster_launcher_config():
    config = load("ray-cluster.yaml")
    assert config["provider"]["type"] == "local" and config["docker"]["image"] == IMAGE
    assert any("--gpus all" in option for option in config["docker"]["run_options"])
    variables = [option.split()[1].split("=")[0] for option in config["docker"]["run_options"]
                 if option.startswith("-e ")]
    assert "VIDISTILL_DB_URL_FILE" in variables and [v for v in variables if not known(v)] == []
    head = " ".join(config["head_start_ray_commands"])
    assert "--port=6379" in head and "--dashboard-port=8265" in head and "vidistill dispatcher" in head
    assert "$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])


def test_env_example_names_what_the_code_reads():
    env = env_example()
    assert {"RAY_ADDRESS", "VIDISTILL_DB_URL_FILE", "MLFLOW_TRACKING_URI"} <= set(env)
    assert [k for k in env if not known(k)] == []
    assert env["RAY_ADDRESS"].endswith(":8265") and env["MLFLOW_TRACKING_URI"].endswith(":5000")


@pytest.mark.parametrize("name", ["compose.yaml", "kuberay/raycluster.yaml", "ray-cluster.yaml", "env.example",
                                  "Dockerfile", "mlflow/start-server.sh", "mlflow/basic_auth.ini",
                                  "make-secrets.sh"])
def test_no_credentials_in_infra_files(name):
    text = (INFRA / name).read_text()
    # (`PASSWORD` as a placeholder in a comment and `${...}` shell expansions are fine.)
    assert not re.search(r"://[^/\s:@$]+:(?!PASSWORD@)[^/\s@$]+@", text), "a URL with a password"
    assert not re.search(r"(?im)^\s*[\w-]*password\s*[:=]\s*[^\s$#\[{]", text), "a password given inline"
