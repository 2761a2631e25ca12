"""What operators see of personal data: masked by key and by pattern; found by keyed hash."""

from __future__ import annotations

from gateway.ops import masking


def test_bundle_data_is_masked_but_the_company_stays_readable(example):
    masked = masking.mask(example["data"])
    applicant = masked["applicant"]
    assert applicant["nik"] == "3171********0123"
    assert applicant["name"] == "S*** R*****"
    assert applicant["email"] == "***" and applicant["phone"] == "***"
    assert masked["company"]["name"] == example["data"]["company"]["name"]


def test_free_text_loses_niks_and_email_addresses():
    assert masking.mask_text("owner 3171012345670123 <siti@example.id>") == "owner 3171********0123 <***@***>"


def test_a_nik_field_that_is_not_sixteen_digits_is_hidden_entirely():
    assert masking.mask({"owner_nik": "12345"}) == {"owner_nik": "*****"}


def test_niks_are_found_anywhere_in_the_data_and_hashed_with_a_key(monkeypatch):
    data = {"applicant": {"nik": "3171012345670123"}, "heirs": [{"id_number": "3171999988887777"}]}
    assert masking.niks_in(data) == {"3171012345670123", "3171999988887777"}
    first = masking.nik_hash("3171012345670123")
    monkeypatch.setenv("SATUPINTU_NIK_HASH_KEY", "another key")
    assert masking.nik_hash("3171012345670123") != first
