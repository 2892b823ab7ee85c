"""Each bad-input code comes from a real bad file, as JSON {code, message}, and leaves nothing."""

from __future__ import annotations

import api_samples as samples
import httpx
import pytest
from api_helpers import Env

from backend.models import Analysis, AuditEvent, ModelResult

CASES = [
    # (endpoint, file bytes, form data, status, code)
    ("/classify", samples.not_an_image(), {}, 415, "unsupported_format"),
    ("/analyses", b"GIF89a" + b"\0" * 64, {}, 415, "unsupported_format"),
    ("/segment", samples.truncated_png(), {}, 400, "corrupt_image"),
    ("/explain", b"\x93NUMPY garbage", {}, 400, "corrupt_image"),
    ("/classify", samples.huge_png(), {}, 413, "too_large"),
    ("/segment", samples.bomb_png(), {}, 413, "too_large"),
    ("/analyses", b"\x93NUMPY" + b"\0" * (3 * 1024 * 1024 + 1), {}, 413, "too_large"),
    ("/classify", b"", {}, 400, "empty_image"),
    ("/analyses", samples.blank_png(), {}, 400, "empty_image"),
    ("/classify", samples.volume_npy(), {"frame": "7"}, 400, "bad_frame"),
    ("/analyses", samples.dicom(frames=2), {"frame": "5"}, 400, "bad_frame"),
    ("/classify", samples.phantom_png(), {"models": "no_such_model"}, 400, "unknown_model"),
    ("/analyses", samples.phantom_png(), {"models": ["cnn_tiny", "nope"]}, 400, "unknown_model"),
    ("/classify", samples.phantom_png(), {"models": "seg_tiny"}, 400, "wrong_task"),
    ("/segment", samples.phantom_png(), {"model": "cnn_tiny"}, 400, "wrong_task"),
    ("/explain", samples.phantom_png(), {"head": "nonsense"}, 422, "validation_error"),
    ("/explain", samples.phantom_png(), {"method": "attention"}, 400, "unsupported_method"),
    (
        "/explain",
        samples.phantom_png(),
        {"head": "stage", "class_index": "9"},
        400,
        "bad_class_index",
    ),
]


async def _snapshot(env: Env) -> tuple[int, int, int, int, int]:
    store = env.runtime.store
    return (
        await env.count(Analysis),
        await env.count(ModelResult),
        await env.count(AuditEvent),
        store.count_dirs(),
        len(store.leftovers()),
    )


@pytest.mark.parametrize(
    ("endpoint", "data", "form", "status", "code"), CASES, ids=[f"{c[0][1:]}-{c[4]}" for c in CASES]
)
async def test_bad_input_is_a_clean_4xx(
    env: Env, alice: dict, endpoint: str, data: bytes, form: dict, status: int, code: str
) -> None:
    before = await _snapshot(env)
    r = await env.client.post(
        endpoint, files={"file": ("upload.png", data, "image/png")}, data=form, headers=alice
    )
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"].endswith(".")
    after = await _snapshot(env)
    assert after == before, "a rejected request left files or rows behind"
    assert after[4] == 0


async def test_missing_file_field(env: Env, alice: dict) -> None:
    r = await env.client.post("/classify", data={"models": "cnn_tiny"}, headers=alice)
    assert r.status_code == 422 and r.json()["code"] == "missing_file"


async def test_failure_while_storing_leaves_nothing(
    env: Env, alice: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the files are written (e.g. the database write fails) removes them again."""
    from backend.repositories import audit

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database went away")

    before = await _snapshot(env)
    monkeypatch.setattr(audit, "record", broken)
    # Like a real server: the 500 response is sent, the exception is only logged.
    transport = httpx.ASGITransport(app=env.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.post(
            "/analyses",
            files={"file": ("a.png", samples.phantom_png(), "image/png")},
            headers=alice,
        )
    monkeypatch.undo()
    assert r.status_code == 500 and r.json()["code"] == "internal_error"
    assert await _snapshot(env) == before
