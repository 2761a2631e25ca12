"""At start-up a role names every SATUPINTU_* variable nothing reads, with the nearest known
name; the variables the catalog's files name (``env:...``, ``${...}``) are known."""

import io
import subprocess
import sys
from pathlib import Path

from core.settings import Settings
from gateway.cli.startup import catalog_variables, report_unknown_variables

REPO = Path(__file__).resolve().parents[2]


def catalog_folder(tmp_path: Path) -> Path:
    (tmp_path / "agencies").mkdir()
    (tmp_path / "agencies" / "town.yaml").write_text(
        'id: town\nendpoint: ${SATUPINTU_TOWN_URL:-http://127.0.0.1:1}\ncallback: {secret: "env:SATUPINTU_TOWN_SECRET"}\n')
    return tmp_path


def test_a_misspelt_variable_is_reported_with_the_nearest_known_name(tmp_path):
    settings = Settings(config_dir=str(catalog_folder(tmp_path)))
    out = io.StringIO()
    env = {"SATUPINTU_WEB_WORKRES": "3", "SATUPINTU_BIND": "127.0.0.1:0", "PATH": "/bin"}
    lines = report_unknown_variables(settings, env, out)
    assert lines == ["SATUPINTU_WEB_WORKRES is not a setting of Satu Pintu; did you mean SATUPINTU_WEB_WORKERS?"]
    assert out.getvalue() == f"satupintu: warning: {lines[0]}\n"


def test_the_variables_the_catalog_names_are_not_reported(tmp_path):
    folder = catalog_folder(tmp_path)
    assert catalog_variables(folder) == {"SATUPINTU_TOWN_URL", "SATUPINTU_TOWN_SECRET"}
    env = {"SATUPINTU_TOWN_SECRET": "s", "SATUPINTU_TOWN_URL": "http://x", "SATUPINTU_TOWN_SECERT": "typo"}
    lines = report_unknown_variables(Settings(config_dir=str(folder)), env, io.StringIO())
    assert [line.split()[0] for line in lines] == ["SATUPINTU_TOWN_SECERT"]


def test_the_demo_catalog_municipality_secret_is_known():
    env = {"SATUPINTU_MUNICIPALITY_SECRET": "s", "SATUPINTU_SANDBOX_TAX_OFFICE_URL": "http://x"}
    assert report_unknown_variables(Settings(config_dir=str(REPO / "config")), env, io.StringIO()) == []


def test_a_role_warns_on_stderr_when_it_starts(tmp_path):
    """The worker of an empty catalog folder, asked for an agency it does not have, stops at
    once (exit 2), having warned first."""
    (tmp_path / "agencies").mkdir()
    (tmp_path / "services").mkdir()
    env = {"PATH": "/usr/bin:/bin", "SATUPINTU_CONFIG": str(tmp_path), "SATUPINTU_AMQP_HEARTBAET": "5"}
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "worker", "--agency", "nobody"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "SATUPINTU_AMQP_HEARTBAET is not a setting of Satu Pintu; did you mean SATUPINTU_AMQP_HEARTBEAT?" \
        in result.stderr
