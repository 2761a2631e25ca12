"""ClamAV or the store away: 503 with Retry-After, and nothing stored."""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path

import pytest
from document_samples import pdf
from test_upload import assert_nothing_kept, document_rows

from gateway.api import create_app


def gateway_with(settings, catalog, engine, **changes):
    app = create_app(dataclasses.replace(settings, **changes), catalog=catalog, engine=engine)
    app.testing = True
    return app.test_client()


def post(client, key: str, content: bytes):
    return client.post("/v1/documents", data={"kind": "ktp", "file": (__import__("io").BytesIO(content), "ktp.pdf")},
                       content_type="multipart/form-data", headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def mute_clamd(tmp_path: Path):
    """A unix socket that takes a connection and closes it without a word, as a dying clamd does."""
    path = tmp_path / "mute.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(64)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"unix://{path}"
    stop.set()
    server.close()
    thread.join(timeout=10)


def test_clamav_not_listening_is_503_with_retry_after_and_nothing_stored(settings, catalog, engine, make_key,
                                                                          tmp_path):
    client = gateway_with(settings, catalog, engine, clamd=f"unix://{tmp_path / 'no-clamd.sock'}")
    answer = post(client, make_key("submit"), pdf(100_000))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"].isdigit()
    assert "virus scanner" in answer.get_json()["detail"]
    assert_nothing_kept(settings, engine)


def test_clamav_closing_without_a_verdict_is_503_and_nothing_stored(settings, catalog, engine, make_key, mute_clamd):
    client = gateway_with(settings, catalog, engine, clamd=mute_clamd)
    answer = post(client, make_key("submit"), pdf(100_000))
    assert answer.status_code == 503 and "Retry-After" in answer.headers
    assert_nothing_kept(settings, engine)


def test_no_scanner_configured_is_503_not_an_unscanned_document(settings, catalog, engine, make_key):
    client = gateway_with(settings, catalog, engine, clamd="")
    assert post(client, make_key("submit"), pdf()).status_code == 503
    assert_nothing_kept(settings, engine)


def test_a_folder_store_that_cannot_be_written_is_503(settings, catalog, engine, make_key, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the store's folder should be")
    client = gateway_with(settings, catalog, engine, document_store=f"file://{blocked}")
    answer = post(client, make_key("submit"), pdf())
    assert answer.status_code == 503 and answer.headers["Retry-After"].isdigit()
    assert "document store" in answer.get_json()["detail"]
    assert document_rows(engine) == 0


@pytest.mark.parametrize("store_url", ["s3"], indirect=True)
def test_an_s3_store_refusing_the_upload_is_503_and_nothing_half_written(settings, catalog, engine, make_key):
    bucket_gone = settings.document_store.replace("s3://docs-", "s3://gone-")
    client = gateway_with(settings, catalog, engine, document_store=bucket_gone)
    answer = post(client, make_key("submit"), pdf(300_000))
    assert answer.status_code == 503
    assert_nothing_kept(settings, engine)
