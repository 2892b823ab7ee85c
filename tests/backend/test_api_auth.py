"""Auth: sign-up, tokens, API keys, and every way a credential can be refused (401)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from api_helpers import SECRET, Env, set_role, signup_and_login

from backend.core import security
from backend.models import AuditEvent


async def test_signup_login_me(env: Env) -> None:
    headers = await signup_and_login(env.client, "Carol@Example.org")
    r = await env.client.get("/auth/me", headers=headers)
    assert r.status_code == 200
    assert r.json()["email"] == "carol@example.org"
    assert r.json()["role"] == "user"


async def test_signup_rejects_duplicates_and_bad_input(env: Env) -> None:
    await signup_and_login(env.client, "dup@example.org")
    body = {"email": "DUP@example.org", "password": "x" * 9}
    r = await env.client.post("/auth/signup", json=body)
    assert r.status_code == 409 and r.json()["code"] == "email_taken"
    r = await env.client.post("/auth/signup", json={"email": "not-an-email", "password": "x" * 9})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = await env.client.post("/auth/signup", json={"email": "short@example.org", "password": "x"})
    assert r.status_code == 422 and "password" in r.json()["message"]


async def test_admin_role_only_granted_by_an_operator(env: Env) -> None:
    # A unique email: the database is shared by the whole session, so the test cannot depend
    # on running first. Sign-up never yields an admin, whatever the email.
    email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    headers = await signup_and_login(env.client, email)
    assert (await env.client.get("/auth/me", headers=headers)).json()["role"] == "user"
    await set_role(env, email, "admin")
    assert (await env.client.get("/auth/me", headers=headers)).json()["role"] == "admin"
    await set_role(env, email, "user")
    assert (await env.client.get("/auth/me", headers=headers)).json()["role"] == "user"
    assert await env.count(AuditEvent, action="auth.role_changed") >= 2


async def test_wrong_password_is_401(env: Env, alice: dict[str, str]) -> None:
    r = await env.client.post(
        "/auth/token", data={"username": "alice@example.org", "password": "wrong-password"}
    )
    assert r.status_code == 401
    assert r.json() == {"code": "invalid_credentials", "message": "Incorrect email or password."}
    r = await env.client.post(
        "/auth/token", data={"username": "nobody@example.org", "password": "wrong-password"}
    )
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"


async def test_no_token_is_401_on_every_data_route(env: Env) -> None:
    some_id = uuid.uuid4()
    for method, path in [
        ("GET", "/auth/me"),
        ("GET", "/history"),
        ("GET", f"/history/{some_id}"),
        ("DELETE", f"/history/{some_id}"),
        ("GET", f"/artifacts/{some_id}/input.png"),
        ("GET", "/models"),
        ("GET", "/models/cnn_tiny"),
        ("POST", "/classify"),
        ("POST", "/segment"),
        ("POST", "/explain"),
        ("POST", "/analyses"),
        ("GET", "/auth/api-keys"),
    ]:
        r = await env.client.request(method, path)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["code"] == "not_authenticated"
        assert r.headers.get("www-authenticate") == "Bearer"


async def test_expired_token_is_401(env: Env, alice: dict[str, str]) -> None:
    me = (await env.client.get("/auth/me", headers=alice)).json()
    token, _ = security.create_access_token(
        uuid.UUID(me["id"]), SECRET, 5, now=datetime.now(UTC) - timedelta(minutes=30)
    )
    r = await env.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["code"] == "token_expired"


async def test_wrong_signature_is_401(env: Env, alice: dict[str, str]) -> None:
    me = (await env.client.get("/auth/me", headers=alice)).json()
    forged, _ = security.create_access_token(uuid.UUID(me["id"]), "another-secret-entirely", 5)
    r = await env.client.get("/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"
    r = await env.client.get("/auth/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


async def test_token_for_unknown_user_is_401(env: Env) -> None:
    token, _ = security.create_access_token(uuid.uuid4(), SECRET, 5)
    r = await env.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


async def test_api_key_lifecycle_and_revocation(env: Env) -> None:
    headers = await signup_and_login(env.client, "service@example.org")
    r = await env.client.post("/auth/api-keys", json={"name": "PACS bridge"}, headers=headers)
    assert r.status_code == 201
    created = r.json()
    key = created["key"]
    assert key.startswith("ssk_") and created["active"] is True
    assert key.startswith(created["prefix"])

    r = await env.client.get("/auth/me", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["email"] == "service@example.org"

    listed = (await env.client.get("/auth/api-keys", headers=headers)).json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and listed[0]["last_used_at"] is not None

    # Another user cannot revoke it.
    other = await signup_and_login(env.client, "intruder@example.org")
    r = await env.client.delete(f"/auth/api-keys/{created['id']}", headers=other)
    assert r.status_code == 404 and r.json()["code"] == "api_key_not_found"

    r = await env.client.delete(f"/auth/api-keys/{created['id']}", headers=headers)
    assert r.status_code == 200 and r.json()["active"] is False

    r = await env.client.get("/auth/me", headers={"X-API-Key": key})
    assert r.status_code == 401 and r.json()["code"] == "revoked_api_key"
    r = await env.client.get("/history", headers={"X-API-Key": key})
    assert r.status_code == 401

    # A made-up key of the right shape, and garbage, are refused too.
    r = await env.client.get("/auth/me", headers={"X-API-Key": "ssk_" + "A" * 43})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    r = await env.client.get("/auth/me", headers={"X-API-Key": "garbage"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"

    actions = {e.action for e in await _events(env)}
    assert {"api_key.create", "api_key.revoke", "auth.signup", "auth.login"} <= actions


async def _events(env: Env) -> list[AuditEvent]:
    from backend.repositories.audit import list_events

    async with env.runtime.sessionmaker() as session:
        return await list_events(session)


async def test_unknown_route_is_json_404(env: Env) -> None:
    r = await env.client.get("/no/such/thing")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await env.client.put("/auth/me")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
