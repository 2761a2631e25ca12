"""The dashboard's sessions live on the server: logging out, revoking the key or idling ends
them, and the cookie is never the key (issue 26, finding 6)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import update

from gateway import clients
from gateway.store import tables as t


@pytest.fixture
def operator(make_key):
    return make_key("ops", name="operator-sessions")


def login(client, key):
    response = client.post("/ops/login", data={"key": key, "next": "/ops/"}, headers={"Origin": "http://localhost"})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client.get_cookie("satupintu_ops", path="/ops").value


def test_the_cookie_holds_a_session_token_not_the_key(client, operator):
    token = login(client, operator)
    assert token and token != operator and operator not in token
    assert client.get("/ops/api/overview").status_code == 200


def test_after_logout_the_same_cookie_is_refused(client, operator):
    token = login(client, operator)
    assert client.post("/ops/logout", headers={"Origin": "http://localhost"}).status_code == 302
    client.set_cookie("satupintu_ops", token, path="/ops")  # a copy of the cookie kept from before
    assert client.get("/ops/api/overview").status_code == 401
    assert client.get("/ops/").status_code == 302  # back to the login form


def test_revoking_the_key_ends_its_sessions(client, operator, engine):
    login(client, operator)
    with engine.begin() as conn:
        clients.revoke(conn, "operator-sessions")
    assert client.get("/ops/api/overview").status_code == 401


def test_a_session_idle_too_long_has_ended(client, operator, engine, app):
    login(client, operator)
    idle = app.extensions["satupintu"].settings.session_idle_seconds
    with engine.begin() as conn:
        conn.execute(update(t.sessions).values(
            last_seen_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=idle + 5)))
    assert client.get("/ops/api/overview").status_code == 401


def test_a_session_older_than_the_longest_shift_has_ended(client, operator, engine, app):
    login(client, operator)
    longest = app.extensions["satupintu"].settings.session_max_seconds
    with engine.begin() as conn:
        conn.execute(update(t.sessions).values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=longest + 5)))
    assert client.get("/ops/api/overview").status_code == 401


def test_the_cookie_is_secure_when_the_deployment_says_it_is_behind_tls(client, operator, app):
    context = app.extensions["satupintu"]
    response = client.post("/ops/login", data={"key": operator}, headers={"Origin": "http://localhost"})
    assert "Secure" not in response.headers["Set-Cookie"]
    context.settings = dataclasses.replace(context.settings, behind_tls=True)
    response = client.post("/ops/login", data={"key": operator}, headers={"Origin": "http://localhost"})
    assert "; Secure" in response.headers["Set-Cookie"]
