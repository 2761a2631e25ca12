"""/readyz: store and broker decide readiness; circuit breakers are shown, not counted."""

from broker import breaker


def test_readyz_lists_every_agency_circuit_and_an_open_one_does_not_unready(client, catalog):
    breaker.reset_registry()
    try:
        agency = catalog.agencies["tax-office"]
        cb = breaker.breaker_for(agency)
        for _ in range(agency.failure_threshold):
            cb.record_failure()
        response = client.get("/readyz")
        body = response.get_json()
        assert set(body["circuits"]) == set(catalog.agencies)
        assert body["circuits"]["tax-office"] == "open"
        assert body["circuits"]["company-registry"] == "closed"
        assert response.status_code == 200 and body["status"] == "ready"
    finally:
        breaker.reset_registry()
