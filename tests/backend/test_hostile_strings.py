"""Strings the database cannot hold, dates at the end of the calendar and absurd token expiries
get clear answers on SQLite and PostgreSQL (which refuses NUL in text), never a 500."""

from __future__ import annotations

import uuid

import api_samples
from api_helpers import Env

NUL_NAME = "scan\x00\x1b[2J.png"


def _multipart(filename: str, body: bytes, field: str = "file") -> tuple[bytes, str]:
    """A multipart body by hand: httpx would refuse (or escape) the control characters."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + body + f"\r\n--{boundary}--\r\n".encode(), boundary


async def test_control_characters_in_fields_are_refused(env: Env, alice: dict[str, str]) -> None:
    r = await env.client.post(
        "/auth/signup", json={"email": "x\x00y@example.org", "password": "pass-word-1"}
    )
    assert r.status_code == 422, r.text
    r = await env.client.post(
        "/auth/token", data={"username": "alice\x00@example.org", "password": "pass-word-1"}
    )
    assert r.status_code == 401 and r.json()["code"] == "invalid_credentials", r.text
    r = await env.client.post("/auth/api-keys", json={"name": "k\x00"}, headers=alice)
    assert r.status_code == 422, r.text
    for path in ("/history", "/studies"):
        r = await env.client.get(path, params={"model": "a\x00b"}, headers=alice)
        assert r.status_code == 422, (path, r.text)


async def test_a_file_name_with_control_characters_is_stored_without_them(
    env: Env, alice: dict[str, str]
) -> None:
    body, boundary = _multipart(NUL_NAME, api_samples.phantom_png(3))
    r = await env.client.post(
        "/classify",
        content=body,
        headers={**alice, "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 200, r.text
    stored = r.json()["image"]["filename"]
    assert stored == "scan[2J.png"
    r = await env.client.get(f"/history/{r.json()['id']}", headers=alice)
    assert r.status_code == 200 and r.json()["image"]["filename"] == "scan[2J.png"


async def test_a_job_keeps_its_file_names_without_control_characters(
    env: Env, alice: dict[str, str]
) -> None:
    from jobs_helpers import wait_job

    body, boundary = _multipart(NUL_NAME, api_samples.phantom_png(4), field="files")
    r = await env.client.post(
        "/jobs",
        content=body,
        headers={**alice, "content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 202, r.text
    job = await wait_job(env.client, r.json()["id"], alice)
    assert [item["filename"] for item in job["items"]] == ["scan[2J.png"]


async def test_dates_at_the_end_of_the_calendar(env: Env, alice: dict[str, str]) -> None:
    for path in ("/history", "/studies"):
        r = await env.client.get(path, params={"date_to": "9999-12-31"}, headers=alice)
        assert r.status_code == 200, (path, r.text)
        r = await env.client.get(path, params={"date_from": "9999-12-31"}, headers=alice)
        assert r.status_code == 200 and r.json()["items"] == [], (path, r.text)


async def test_a_signed_token_expiring_after_the_calendar_is_invalid(
    env: Env, alice: dict[str, str]
) -> None:
    from jose import jwt

    me = (await env.client.get("/auth/me", headers=alice)).json()
    claims = {
        "sub": me["id"],
        "iss": env.settings.jwt_issuer,
        "aud": env.settings.jwt_audience,
        "iat": 0,
        "exp": 10**20,
        "typ": "access",
        "gen": 0,
    }
    token = jwt.encode(claims, env.settings.secret_key.get_secret_value(), algorithm="HS256")
    r = await env.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token", r.text
