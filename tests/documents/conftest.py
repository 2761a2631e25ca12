"""Real ClamAV and a real S3 API for the document tests.

``clamd``: Debian's clamav-daemon (``make clamav`` installs it) on a unix socket in a tmp
folder, with a database of the EICAR test signature only (freshclam cannot download here):
the whole file's MD5 (``.hdb``) and its bytes anywhere in a file (``.ndb``, so EICAR inside a
PDF is found too).  ``s3``: moto's threaded server on 127.0.0.1, port 0, reporting the port it
got.  ``settings`` is the shared one plus both, with a file store unless a test asks for
``store_url`` ``"s3"`` (``@pytest.mark.parametrize("store_url", ["file", "s3"], indirect=True)``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from document_samples import EICAR
from support import wait_until


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory):
    """``unix://...`` of a running clamd that knows the EICAR signature."""
    binary = shutil.which("clamd") or ("/usr/sbin/clamd" if os.path.exists("/usr/sbin/clamd") else None)
    if binary is None:
        pytest.fail("clamd is missing: run `make clamav` (apt-get install clamav-daemon)")
    folder = tmp_path_factory.mktemp("clamd")
    (folder / "db").mkdir()
    (folder / "db" / "eicar.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Eicar-Test-Signature\n")
    (folder / "db" / "eicar.ndb").write_text(f"Eicar-Test-Signature:0:*:{EICAR.hex()}\n")
    socket = folder / "clamd.sock"
    (folder / "clamd.conf").write_text(
        f"LocalSocket {socket}\nDatabaseDirectory {folder / 'db'}\nForeground yes\nUser root\n"
        f"StreamMaxLength 64M\nLogFile {folder / 'clamd.log'}\n")
    process = subprocess.Popen([binary, "-c", str(folder / "clamd.conf")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    from clamav_client.clamd import ClamdError, ClamdUnixSocket

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"clamd exited: {(folder / 'clamd.log').read_text(errors='replace')[-2000:]}")
        try:
            return ClamdUnixSocket(path=str(socket), timeout=5).ping() == "PONG"
        except ClamdError:
            return False

    wait_until(answers, timeout=120, interval=0.3, message="clamd to answer PING")
    yield f"unix://{socket}"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def s3_server():
    """``http://127.0.0.1:PORT`` of moto's S3 API server, on the port it was given."""
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if getattr(request, "param", "file") == "s3":
        endpoint = request.getfixturevalue("s3_server")
        mp = request.getfixturevalue("monkeypatch")
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "SATUPINTU_S3_ENDPOINT_URL": endpoint}.items():
            mp.setenv(name, value)
        import boto3
        bucket = "docs-" + uuid.uuid4().hex[:12]
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        return f"s3://{bucket}/uploads"
    return f"file://{tmp_path / 'documents'}"


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, clamd: str, store_url: str):
    from core.settings import Settings
    values = {"SATUPINTU_CLAMD": clamd, "SATUPINTU_DOCUMENT_STORE": store_url,
              "SATUPINTU_DOCUMENT_KEY": base64.b64encode(os.urandom(32)).decode()}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    env.update(values)
    return Settings.from_env()


@pytest.fixture
def upload(client, make_key):
    """``upload(content, kind=..., filename=..., key=..., service=...)``: POST /v1/documents."""
    default_key = make_key("submit", "read")

    def send(content: bytes, *, kind: str | None = "ktp", filename: str = "ktp.pdf", key: str | None = None,
             service: str | None = None, kind_first: bool = True):
        data: dict = {}
        if kind is not None and kind_first:
            data["kind"] = kind
        data["file"] = (io.BytesIO(content), filename)
        if kind is not None and not kind_first:
            data["kind"] = kind
        query = f"?service={service}" if service else ""
        return client.post(f"/v1/documents{query}", data=data, content_type="multipart/form-data",
                           headers={"Authorization": f"Bearer {key or default_key}"})
    send.key = default_key
    return send
