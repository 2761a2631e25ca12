"""Personal data as others than the agency see it: masked by schema, by key and by pattern;
free text from outside loses NIKs, e-mail addresses and the application's own values."""

from __future__ import annotations

from core import masking

NIK = "3171012345670123"


def test_bundle_data_is_masked_by_key_but_the_company_stays_readable(example):
    masked = masking.mask(example["data"])
    applicant = masked["applicant"]
    assert applicant["nik"] == "3171********0123"
    assert applicant["name"] == "S*** R*****"
    assert applicant["email"] == "***" and applicant["phone"] == "***"
    assert masked["company"]["name"] == example["data"]["company"]["name"]


def test_a_nik_field_that_is_not_sixteen_digits_is_hidden_entirely():
    assert masking.mask({"owner_nik": "12345"}) == {"owner_nik": "*****"}


def test_our_own_ids_are_left_alone_even_with_sixteen_digits_in_a_row():
    ids = {"message_id": "msg_0190" + "1234567890123456" + "abcdef012345", "reason": f"for {NIK}"}
    assert masking.mask(ids) == {"message_id": ids["message_id"], "reason": "for 3171********0123"}


def test_free_text_loses_niks_anywhere_and_email_addresses():
    assert masking.mask_free_text(f"owner {NIK} <siti@example.id>") == "owner 3171********0123 <***@***>"
    assert masking.mask_free_text(f"owner NIK{NIK}x") == "owner NIK3171********0123x"
    assert masking.mask_free_text(f"id{NIK}abcd, ktp:{NIK}.") == "id3171********0123abcd, ktp:3171********0123."


def test_free_text_keeps_longer_and_shorter_numbers():
    text = "amount 31710123456701234, npwp 012345678901234"
    assert masking.mask_free_text(text) == text


def test_free_text_loses_the_applications_own_personal_values(catalog, example):
    values = masking.pii_values(example["data"], catalog.services["business-startup"].input_schema)
    text = "owner NIK3171012345670123 (Siti Rahayu, siti@example.com; SITI RAHAYU, siti.rahayu@example.id)"
    masked = masking.mask_free_text(text, values)
    assert "3171012345670123" not in masked and "@example" not in masked
    assert "Siti Rahayu" not in masked and "SITI RAHAYU" not in masked
    assert masked.startswith("owner NIK3171********0123 (S*********u, ***@***;")


def test_masking_twice_changes_nothing(catalog, example):
    values = masking.pii_values(example["data"], catalog.services["business-startup"].input_schema)
    once = masking.mask_free_text(f"NIK{NIK} Siti Rahayu siti@example.com", values)
    assert masking.mask_free_text(once, values) == once
    assert masking.mask_free_text(None) is None and masking.mask_free_text("") == ""


def test_an_agency_answer_loses_personal_fields_niks_and_email_addresses():
    answer = '<t:R><t:name>Budi</t:name><t:note>ktp NIK3171012345670123 budi@example.id</t:note></t:R>'
    assert masking.mask_answer(answer) == "<t:R><t:name>***</t:name><t:note>ktp NIK3171********0123 ***@***</t:note></t:R>"
    assert masking.raw_excerpt(b'{"note": "' + b"x" * 5000 + b'"}', 100).endswith("\u2026")


def test_the_personal_values_of_an_agency_request_are_those_under_personal_keys():
    payload = {"owner_nik": NIK, "owner_name": "Siti Rahayu", "company_name": "PT Kopi", "items": [{"email": "a@b.id"}]}
    assert masking.personal_values(payload) == {NIK, "Siti Rahayu", "a@b.id"}


def test_niks_are_found_anywhere_in_the_data_and_hashed_with_a_key():
    data = {"applicant": {"nik": NIK}, "heirs": [{"id_number": "3171999988887777"}], "note": "NIK3271000011112222"}
    assert masking.niks_in(data) == {NIK, "3171999988887777", "3271000011112222"}
    assert masking.nik_hash(NIK, "one key") != masking.nik_hash(NIK, "another key")
    assert masking.nik_hash(NIK) == masking.nik_hash(NIK, masking.default_nik_hash_key())
