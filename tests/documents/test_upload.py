"""POST /v1/documents and reading a document back, against real ClamAV and a real S3 API."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import boto3
import pytest
from document_samples import EICAR, EXE, PNG, pdf

from core.settings import Settings


def stored_objects(settings: Settings) -> list[bytes]:
    """Every document the store holds, as stored (sealed), spool files included."""
    url = settings.document_store
    if url.startswith("file://"):
        root = Path(url.removeprefix("file://"))
        return [p.read_bytes() for p in root.rglob("*") if p.is_file()] if root.exists() else []
    bucket, _, _prefix = url.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return [s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]


def document_rows(engine) -> int:
    from sqlalchemy import func, select

    from gateway.store.documents import documents
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(documents)).scalar()


def assert_nothing_kept(settings: Settings, engine) -> None:
    assert stored_objects(settings) == []
    assert document_rows(engine) == 0


@pytest.mark.parametrize("store_url", ["file", "s3"], indirect=True)
def test_an_uploaded_pdf_is_stored_encrypted_and_read_back_by_its_owner(upload, client, settings):
    content = pdf(300_000)  # several sealed chunks
    answer = upload(content, kind="deed", filename="akta pendirian.pdf")
    assert answer.status_code == 201, answer.get_json()
    doc = answer.get_json()
    assert {k: doc[k] for k in ("kind", "filename", "media_type", "size", "sha256", "scan")} == {
        "kind": "deed", "filename": "akta pendirian.pdf", "media_type": "application/pdf", "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(), "scan": "clean"}
    assert answer.headers["Location"].endswith(f"/v1/documents/{doc['id']}")

    [stored] = stored_objects(settings)
    assert content[:64] not in stored and content[-64:] not in stored and len(stored) > len(content)

    auth = {"Authorization": f"Bearer {upload.key}"}
    meta = client.get(f"/v1/documents/{doc['id']}", headers=auth)
    assert meta.status_code == 200 and meta.get_json()["sha256"] == doc["sha256"]
    body = client.get(f"/v1/documents/{doc['id']}/content", headers=auth)
    assert body.status_code == 200
    assert body.data == content
    assert body.mimetype == "application/pdf" and body.headers["X-Content-Type-Options"] == "nosniff"
    assert "attachment" in body.headers["Content-Disposition"]


def test_another_clients_document_is_not_found(upload, client, make_key):
    doc = upload(PNG, filename="ktp.png").get_json()
    other = {"Authorization": f"Bearer {make_key('submit', 'read')}"}
    for path in (f"/v1/documents/{doc['id']}", f"/v1/documents/{doc['id']}/content"):
        answer = client.get(path, headers=other)
        assert answer.status_code == 404, path
        assert answer.mimetype == "application/problem+json"


def test_reading_needs_the_read_scope_and_uploading_the_submit_scope(upload, client, make_key):
    assert upload(pdf(), key=make_key("read")).status_code == 403
    doc = upload(pdf()).get_json()
    answer = client.get(f"/v1/documents/{doc['id']}", headers={"Authorization": f"Bearer {make_key('submit')}"})
    assert answer.status_code == 403


def test_an_exe_called_ktp_pdf_is_refused_as_unsupported_media_type(upload, settings, engine):
    answer = upload(EXE, filename="ktp.pdf")
    assert answer.status_code == 415
    problem = answer.get_json()
    assert problem["type"].endswith("/unsupported-media-type")
    assert problem["errors"][0]["path"] == "/file"
    assert_nothing_kept(settings, engine)


def test_a_png_is_refused_for_the_deed_which_takes_pdf_only(upload, settings, engine):
    answer = upload(PNG, kind="deed", filename="deed.png")
    assert answer.status_code == 415
    assert "application/pdf" in answer.get_json()["detail"]
    assert_nothing_kept(settings, engine)


class CountingStream(io.BytesIO):
    """A request body that remembers how much of it the gateway read."""

    taken = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


def multipart(content: bytes, kind: str, filename: str = "ktp.pdf") -> tuple[bytes, str]:
    boundary = "satupintu-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\n{kind}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/pdf\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_a_file_over_its_kinds_size_is_413_and_reading_stops_there(client, upload, settings, engine):
    content = pdf(5 * 1024 * 1024 + 200_000)  # the KTP may have 5 MiB; the deed's 10 MiB allow the body
    body, content_type = multipart(content, "ktp")
    stream = CountingStream(body)
    answer = client.post("/v1/documents", input_stream=stream, content_type=content_type,
                         headers={"Authorization": f"Bearer {upload.key}"})
    assert answer.status_code == 413
    assert answer.get_json()["errors"][0]["path"] == "/file"
    assert stream.taken < len(body) - 100_000
    assert_nothing_kept(settings, engine)


def test_the_kinds_size_holds_when_the_kind_comes_after_the_file(upload, settings, engine):
    answer = upload(pdf(5 * 1024 * 1024 + 1), kind="ktp", kind_first=False)
    assert answer.status_code == 413
    assert_nothing_kept(settings, engine)
    assert upload(pdf(), kind="ktp", kind_first=False).status_code == 201


def test_a_body_declared_larger_than_any_document_is_refused_unread(client, upload):
    stream = CountingStream(b"--x\r\n" * 1000)
    answer = client.post("/v1/documents", input_stream=stream, content_type="multipart/form-data; boundary=x",
                         environ_overrides={"CONTENT_LENGTH": str(200 * 1024 * 1024)},
                         headers={"Authorization": f"Bearer {upload.key}"})
    assert answer.status_code == 413, answer.get_json()
    assert answer.get_json()["errors"][0]["path"] == "/file"
    assert stream.taken == 0


def test_an_empty_file_is_422(upload, settings, engine):
    answer = upload(b"")
    assert answer.status_code == 422
    assert answer.get_json()["errors"] == [{"path": "/file", "message": "the file is empty"}]
    assert_nothing_kept(settings, engine)


# The test client writes a file name into its header unescaped: "..\\\\ktp.pdf" arrives as ..\\ktp.pdf.
@pytest.mark.parametrize("filename", ["../../etc/passwd.pdf", "..\\\\ktp.pdf", "ktp\x07.pdf", "ktp\u202egpj.pdf",
                                      "a/b.pdf"])
def test_a_filename_with_a_path_or_control_characters_is_422(upload, settings, engine, filename):
    answer = upload(pdf(), filename=filename)
    assert answer.status_code == 422, filename
    assert answer.get_json()["errors"][0]["path"] == "/file"
    assert_nothing_kept(settings, engine)


def test_an_unknown_kind_or_service_is_422_naming_the_field(upload, settings, engine):
    answer = upload(pdf(), kind="passport")
    assert answer.status_code == 422 and answer.get_json()["errors"][0]["path"] == "/kind"
    assert "ktp" in answer.get_json()["errors"][0]["message"]
    answer = upload(pdf(), service="no-such-service")
    assert answer.status_code == 422 and answer.get_json()["errors"][0]["path"] == "/service"
    assert upload(pdf(), kind=None).get_json()["errors"][0]["path"] == "/kind"
    assert_nothing_kept(settings, engine)


def test_a_client_that_disconnects_mid_upload_leaves_nothing(client, upload, settings, engine):
    body, content_type = multipart(pdf(400_000), "deed")
    cut = CountingStream(body[: len(body) // 2])  # the rest never arrives
    answer = client.post("/v1/documents", input_stream=cut, content_type=content_type,
                         environ_overrides={"CONTENT_LENGTH": str(len(body))},
                         headers={"Authorization": f"Bearer {upload.key}"})
    assert answer.status_code == 400
    assert answer.get_json()["type"].endswith("/incomplete")
    assert_nothing_kept(settings, engine)


@pytest.mark.parametrize("content", [EICAR, pdf(1000)[:500] + EICAR + pdf(1000)[500:]], ids=["eicar", "eicar-in-pdf"])
def test_the_eicar_test_file_is_422_infected_and_not_kept(upload, settings, engine, content):
    answer = upload(content, filename="ktp.pdf")
    assert answer.status_code == 422
    problem = answer.get_json()
    assert problem["type"].endswith("/infected")
    assert "Eicar-Test-Signature" in problem["detail"]
    assert_nothing_kept(settings, engine)


def test_the_catalog_shows_each_services_document_kinds(client, upload):
    answer = client.get("/v1/services", headers={"Authorization": f"Bearer {upload.key}"})
    [service] = [s for s in answer.get_json()["items"] if s["id"] == "business-startup"]
    assert service["documents"]["ktp"] == {"title": "KTP scan (the applicant's identity card)", "required": False,
                                           "media_types": ["application/pdf", "image/jpeg", "image/png"],
                                           "max_bytes": 5 * 1024 * 1024}
    assert service["documents"]["deed"]["media_types"] == ["application/pdf"]
    steps = {s["step"]: s["documents"] for s in service["steps"]}
    assert steps["company"] == ["ktp", "deed"] and steps["tax"] == ["ktp"] and steps["permit"] == []
