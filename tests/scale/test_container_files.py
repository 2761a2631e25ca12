"""The Dockerfile, docker-compose.yml and gunicorn.conf.py name only things that exist.

No container engine runs here, so these tests read the files instead: every file the
Dockerfile copies exists; every role a container runs parses with the real ``satupintu``
command line; the gateway command of the compose file runs for real here (gunicorn with
``gunicorn.conf.py``), and the image's health check passes against it; every environment
variable the files set is read by our code, the catalog, or the image it is given to;
every setting in ``gunicorn.conf.py`` is one gunicorn knows.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from support import wait_until

REPO = Path(__file__).resolve().parents[2]
ROLES_OF_A_STACK = {"relay", "worker", "tracker", "sandbox"}
# Variables read by the images we do not build (documented by those images) or by Python.
THIRD_PARTY_ENV = {
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"},
    "rabbitmq": {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"},
    "python": {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"},
}
# Commands the third-party images bring, for their health checks.
THIRD_PARTY_COMMANDS = {"postgres": {"pg_isready"}, "rabbitmq": {"rabbitmq-diagnostics"}}


# --- reading the files -------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        lines.append(current.strip())
        current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def exec_form(arguments: str) -> list[str]:
    arguments = arguments.strip()
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            out.append([])
        out[-1].append(instruction)
    return out


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with an empty environment: the defaults."""
    return re.sub(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", str(value))


def source_text() -> str:
    """Everything of ours that may read an environment variable."""
    parts = []
    for folder in ("gateway", "broker", "adapters", "sandbox"):
        parts += [p.read_text(errors="replace") for p in (REPO / folder).rglob("*.py")]
    parts += [p.read_text() for p in (REPO / "config").rglob("*.yaml")]
    parts.append((REPO / "gunicorn.conf.py").read_text())
    return "\n".join(parts)


def read_by_settings() -> set[str]:
    """The variables ``Settings.from_env`` looks up: every role reads its ``SATUPINTU_*``
    variables there, once, so a name counts as read when ``from_env`` asks for it."""
    from core.settings import Settings

    class Recording(dict):
        def __init__(self) -> None:
            super().__init__()
            self.asked: set[str] = set()

        def get(self, name, default=None):  # noqa: ANN001, ANN201 - dict.get's signature
            self.asked.add(name)
            return default

    env = Recording()
    Settings.from_env(env)
    assert "SATUPINTU_DATABASE_URL" in env.asked  # from_env reads through .get(): the recording sees it
    return env.asked


def our_services(doc: dict) -> dict[str, dict]:
    return {name: s for name, s in doc["services"].items() if "build" in s}


def role(service: dict) -> str:
    entry = service.get("entrypoint") or []
    if entry[:1] == ["gunicorn"]:
        return "serve"
    if entry == ["python", "-m", "sandbox"]:
        return "sandbox"
    return (service.get("command") or ["serve"])[0]


def is_gateway(service: dict) -> bool:
    return role(service) == "serve"


# --- the Dockerfile ----------------------------------------------------------------------

def test_the_dockerfile_builds_in_stages_and_runs_as_a_user_with_a_health_check():
    build, *_, final = stages()
    assert len(stages()) >= 2
    assert " AS " in build[0][1].upper()
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the final stage must not run as root"
    health = [args for word, args in final if word == "HEALTHCHECK"]
    assert health and "CMD" in health[0]
    assert any(word == "COPY" and "--from=build" in args for word, args in final)


def test_every_file_the_dockerfile_copies_exists():
    for word, args in dockerfile_instructions():
        if word != "COPY" or "--from=" in args:
            continue
        *sources, _destination = shlex.split(args)
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"


def test_the_image_command_and_extras_exist():
    from gateway.cli import parser
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    scripts = dict(line.split("=", 1) for line in config["options.entry_points"]["console_scripts"].split("\n")
                   if "=" in line)
    scripts = {k.strip(): v.strip() for k, v in scripts.items()}
    final = stages()[-1]
    entry = exec_form(next(args for word, args in final if word == "ENTRYPOINT"))
    assert entry == ["satupintu"] and scripts["satupintu"] == "gateway.cli:main"
    parser().parse_args(exec_form(next(args for word, args in final if word == "CMD")))
    extras = set(config["options.extras_require"])
    for word, args in dockerfile_instructions():
        for named in re.findall(r"\.\[([a-z,]+)\]", args) if word == "RUN" else []:
            assert set(named.split(",")) <= extras, f"extras {named} not all in setup.cfg"


def test_every_variable_the_dockerfile_sets_is_read_somewhere():
    text = source_text() + (REPO / "Dockerfile").read_text().split("HEALTHCHECK", 1)[1]
    settings = read_by_settings()
    for word, args in dockerfile_instructions():
        if word != "ENV":
            continue
        for name in re.findall(r"([A-Z][A-Z0-9_]+)=", args):
            assert name in THIRD_PARTY_ENV["python"] or name in settings or f"'{name}'" in text or f'"{name}"' in text \
                or f"${{{name}" in text, f"the Dockerfile sets {name}, which nothing reads"


# --- docker-compose.yml ------------------------------------------------------------------

def test_the_compose_file_has_every_role_and_two_gateways():
    doc = compose()
    services = doc["services"]
    assert {"rabbitmq", "postgres"} <= set(services)
    assert any("rabbitmq" in s.get("image", "") for s in services.values())
    assert any("postgres" in s.get("image", "") for s in services.values())
    ours = our_services(doc)
    roles = {role(s) for s in ours.values()}
    assert ROLES_OF_A_STACK <= roles
    assert sum(is_gateway(s) for s in ours.values()) >= 2
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on {dependency}, which is not a service"


def test_every_command_in_the_compose_file_parses_with_the_real_command_line():
    from gateway.cli import parser
    from sandbox.__main__ import parse_args as sandbox_args
    build_contexts = set()
    for name, service in our_services(compose()).items():
        build_contexts.add(service["build"] if isinstance(service["build"], str) else service["build"]["context"])
        entry = service.get("entrypoint")
        if entry == ["python", "-m", "sandbox"]:
            sandbox_args([interpolate(part) for part in service.get("command") or []])
            continue
        if entry:
            assert entry[:2] == ["gunicorn", "-c"], f"{name}: unexpected entrypoint {entry}"
            assert entry[2] == "/app/gunicorn.conf.py" and (REPO / "gunicorn.conf.py").exists()
            module, _, call = entry[3].partition(":")
            assert call.endswith("()")
            target = getattr(__import__(module, fromlist=["_"]), call[:-2])
            assert callable(target), f"{name}: {entry[3]} is not a factory"
            continue
        command = [interpolate(part) for part in service.get("command") or ["serve"]]
        parser().parse_args(command)  # exits 2 (fails the test) on an unknown role or option
    for context in build_contexts:
        assert (REPO / context / "Dockerfile").exists()


def test_every_variable_the_compose_file_sets_is_read_by_someone():
    text = source_text() + (REPO / "Dockerfile").read_text()
    settings = read_by_settings()
    doc = compose()
    for name, service in doc["services"].items():
        image = service.get("image", "")
        allowed = set().union(*(v for k, v in THIRD_PARTY_ENV.items() if k in image and "build" not in service))
        if "build" in service and role(service) != "sandbox":  # the sandbox imports nothing of ours
            allowed |= settings
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        for variable in environment:
            assert variable in allowed or f'"{variable}"' in text or f"'{variable}'" in text \
                or f"${{{variable}" in text or f"env:{variable}" in text, \
                f"{name} sets {variable}, which nothing in that container reads"


def test_health_checks_call_commands_the_images_have():
    for name, service in compose()["services"].items():
        check = service.get("healthcheck") or {}
        if not check or check.get("disable"):
            continue
        test = check["test"]
        assert test[0] in ("CMD", "CMD-SHELL")
        command = test[1] if test[0] == "CMD" else shlex.split(test[1])[0]
        image = service.get("image", "")
        known = set().union(*(v for k, v in THIRD_PARTY_COMMANDS.items() if k in image))
        assert command in known, f"{name}: health check runs {command!r}, not known in {image}"


def test_the_sandbox_ports_in_the_compose_file_are_the_sandbox_defaults():
    from sandbox.server import DEFAULT_PORTS
    env = compose()["x-satupintu-env"]
    for agency, port in DEFAULT_PORTS.items():
        url = env[f"SATUPINTU_SANDBOX_{agency.upper().replace('-', '_')}_URL"]
        assert url == f"http://sandbox:{port}"


# --- gunicorn.conf.py --------------------------------------------------------------------

def test_every_setting_in_the_gunicorn_config_is_one_gunicorn_knows(monkeypatch):
    from gunicorn.config import Config
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/unused")
    namespace: dict = {"__file__": str(REPO / "gunicorn.conf.py")}
    exec(compile((REPO / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)
    config = Config()
    names = {k for k, v in namespace.items() if not k.startswith("_") and not isinstance(v, type(os))
             and k not in ("tempfile", "Path")}
    unknown = names - set(config.settings)
    assert not unknown, f"gunicorn.conf.py sets {unknown}, which gunicorn does not know"
    for key in names:
        config.set(key, namespace[key])  # validates each value the way gunicorn does
    from gunicorn.workers.gthread import ThreadWorker
    assert config.worker_class_str == "gthread"
    assert issubclass(config.worker_class, ThreadWorker)  # gthread, as `satupintu serve` runs it


def test_the_gateway_runs_under_gunicorn_as_the_compose_file_starts_it(env, engine, tmp_path):
    """``gunicorn -c gunicorn.conf.py 'gateway.api:create_app()'`` serves, and the image's
    health check passes against it."""
    process_env = {**os.environ, **env, "SATUPINTU_BIND": "127.0.0.1:0", "SATUPINTU_WEB_WORKERS": "1",
                   "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
                   "SATUPINTU_METRICS_TOKEN": "scrape-token-for-tests"}
    process_env.pop("SATUPINTU_HEALTH_URL", None)
    entry = compose()["x-gateway"]["entrypoint"]
    argv = [str(Path(sys.executable).parent / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py"), *entry[3:]]
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(argv, env=process_env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                               start_new_session=True)
    try:
        def listening() -> str | None:  # port 0: when_ready prints the address gunicorn got
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited: {(tmp_path / 'gunicorn.log').read_text()[-2000:]}")
            found = re.search(r"^SATUPINTU_URL=http://(\S+)$", (tmp_path / "gunicorn.log").read_text(), re.M)
            return found and found.group(1)
        bind = wait_until(listening, 30, message="gunicorn to say where it listens")

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited: {(tmp_path / 'gunicorn.log').read_text()[-2000:]}")
            try:
                return requests.get(f"http://{bind}/readyz", timeout=1).ok
            except requests.RequestException:
                return False
        wait_until(ready, 30, message="the gateway under gunicorn")
        assert requests.get(f"http://{bind}/metrics", timeout=5).status_code == 401
        assert requests.get(f"http://{bind}/metrics", headers={"Authorization": "Bearer scrape-token-for-tests"},
                            timeout=5).ok
        health = next(args for word, args in stages()[-1] if word == "HEALTHCHECK")
        command = exec_form(health.split("CMD", 1)[1])
        assert command[0] == "python"
        result = subprocess.run([sys.executable, *command[1:]], timeout=10, capture_output=True, text=True,
                                env={**process_env, "SATUPINTU_HEALTH_URL": f"http://{bind}/healthz"})
        assert result.returncode == 0, result.stderr
    finally:
        process.terminate()
        process.wait(20)
    output = (tmp_path / "gunicorn.log").read_text()
    assert "Traceback" not in output, output[-3000:]
    assert "Control socket" not in output  # one fixed path per user: gateways would take it from each other
