"""History: pagination, filters, deletion with files, and strict per-user isolation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import api_samples as samples
from api_helpers import Env, admin_headers, signup_and_login

from backend.models import Analysis, AuditEvent, ModelResult


async def _classify(env: Env, headers: dict, seed: int, models: list[str] | None = None) -> dict:
    r = await env.client.post(
        "/classify",
        files={"file": (f"s{seed}.png", samples.phantom_png(seed), "image/png")},
        data={"models": models} if models else {},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_pagination_and_filters(env: Env) -> None:
    me = await signup_and_login(env.client, "history@example.org")
    made = [await _classify(env, me, i) for i in range(3)]
    made.append(await _classify(env, me, 9, ["cnn_clinical"]))
    r = await env.client.post(
        "/segment", files={"file": ("s.png", samples.phantom_png(1), "image/png")}, headers=me
    )
    made.append(r.json())
    newest_first = [m["id"] for m in reversed(made)]

    page = (await env.client.get("/history", params={"limit": 2}, headers=me)).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 0
    assert [i["id"] for i in page["items"]] == newest_first[:2]
    page = (await env.client.get("/history", params={"limit": 2, "offset": 4}, headers=me)).json()
    assert [i["id"] for i in page["items"]] == newest_first[4:]

    async def ids(**params: object) -> set[str]:
        r = await env.client.get("/history", params=params, headers=me)
        assert r.status_code == 200, r.text
        return {i["id"] for i in r.json()["items"]}

    assert await ids(model="cnn_clinical") == {made[3]["id"]}
    assert await ids(model="seg_tiny") == {made[4]["id"]}
    assert await ids(kind="segment") == {made[4]["id"]}
    status = made[0]["classifications"][0]["as_status"]
    expected = {
        m["id"]
        for m in made
        if m["kind"] == "classify" and m["classifications"][0]["as_status"] == status
    }
    assert await ids(as_status=status) == expected
    stage = made[0]["classifications"][0]["stage"]
    expected = {
        m["id"]
        for m in made
        if m["kind"] == "classify" and m["classifications"][0]["stage"] == stage
    }
    assert await ids(stage=stage.lower()) == expected
    today = datetime.now(UTC).date()
    assert len(await ids(date_from=today.isoformat(), date_to=today.isoformat())) == 5
    assert await ids(date_to=(today - timedelta(days=1)).isoformat()) == set()
    assert await ids(date_from=(today + timedelta(days=1)).isoformat()) == set()

    r = await env.client.get("/history", params={"limit": 0}, headers=me)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = await env.client.get("/history", params={"as_status": "maybe"}, headers=me)
    assert r.status_code == 422


async def test_users_cannot_see_each_other(env: Env, alice: dict, bob: dict) -> None:
    mine = await _classify(env, alice, 11)
    aid = mine["id"]
    # Bob's history does not list it, and he cannot read, delete or fetch its images.
    listed = (await env.client.get("/history", params={"limit": 100}, headers=bob)).json()
    assert aid not in {i["id"] for i in listed["items"]}
    r = await env.client.get(f"/history/{aid}", headers=bob)
    assert r.status_code == 404 and r.json()["code"] == "analysis_not_found"
    r = await env.client.delete(f"/history/{aid}", headers=bob)
    assert r.status_code == 404
    r = await env.client.get(f"/artifacts/{aid}/input.png", headers=bob)
    assert r.status_code == 404
    # An unknown id looks the same as someone else's (no probing).
    r = await env.client.get(f"/history/{uuid.uuid4()}", headers=bob)
    assert r.status_code == 404 and r.json()["code"] == "analysis_not_found"
    r = await env.client.get("/history/not-a-uuid", headers=bob)
    assert r.status_code == 422
    # Path tricks on artifact names get nowhere.
    for name in ("..%2F..%2Fspondyscan.db", "input.PNG", ".staging", "x.txt"):
        r = await env.client.get(f"/artifacts/{aid}/{name}", headers=alice)
        assert r.status_code == 404, name
    # Alice still has it; an admin may read it.
    assert (await env.client.get(f"/history/{aid}", headers=alice)).status_code == 200
    admin = await signup_and_login(env.client, f"admin-{env.backend}@example.org")
    assert (await env.client.get(f"/history/{aid}", headers=admin)).status_code == 404  # not admin
    root = await admin_headers(env)
    assert (await env.client.get(f"/history/{aid}", headers=root)).status_code == 200
    assert (await env.client.get(f"/artifacts/{aid}/input.png", headers=root)).status_code == 200
    # Admins see everyone's entries by id, but their own list only has their own.
    listed = (await env.client.get("/history", headers=root)).json()
    assert aid not in {i["id"] for i in listed["items"]}


async def test_delete_removes_rows_and_files_keeps_audit(env: Env, alice: dict) -> None:
    r = await env.client.post(
        "/analyses", files={"file": ("a.png", samples.phantom_png(12), "image/png")}, headers=alice
    )
    body = r.json()
    aid = body["id"]
    store = env.runtime.store
    assert store.exists(uuid.UUID(aid)) and "input.png" in store.names(uuid.UUID(aid))
    r = await env.client.delete(f"/history/{aid}", headers=alice)
    assert r.status_code == 204
    assert not store.exists(uuid.UUID(aid)) and store.leftovers() == []
    assert await env.count(Analysis, id=aid) == 0
    assert await env.count(ModelResult, analysis_id=aid) == 0
    assert await env.count(AuditEvent, action="analysis.delete", target=aid) == 1
    assert await env.count(AuditEvent, action="inference.analysis", target=aid) == 1
    assert (await env.client.get(f"/history/{aid}", headers=alice)).status_code == 404
    assert (await env.client.get(body["image_url"], headers=alice)).status_code == 404
    assert (await env.client.delete(f"/history/{aid}", headers=alice)).status_code == 404


async def test_api_key_sees_the_same_history(env: Env) -> None:
    me = await signup_and_login(env.client, "robot-owner@example.org")
    key = (await env.client.post("/auth/api-keys", json={"name": "s"}, headers=me)).json()["key"]
    made = await _classify(env, {"X-API-Key": key}, 13)
    listed = (await env.client.get("/history", headers=me)).json()
    assert [i["id"] for i in listed["items"]] == [made["id"]]
    events = await env.count(AuditEvent, action="inference.classify", target=made["id"])
    assert events == 1
