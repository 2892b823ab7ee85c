"""The web app's generated API client must match the API it talks to.

`frontend/openapi.json` is dumped from `create_app()` and `frontend/src/client/` is generated
from it; both are committed. When a route or schema changes, `make client` refreshes them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "frontend" / "openapi.json"
STAMP = ROOT / "frontend" / "src" / "client" / "openapi.sha256"
HINT = "run `make client` and commit frontend/openapi.json and frontend/src/client/"


def _diff_summary(committed: dict, current: dict) -> str:
    old_paths, new_paths = set(committed.get("paths", {})), set(current.get("paths", {}))
    old_schemas = committed.get("components", {}).get("schemas", {})
    new_schemas = current.get("components", {}).get("schemas", {})
    lines = [f"+ path {p}" for p in sorted(new_paths - old_paths)]
    lines += [f"- path {p}" for p in sorted(old_paths - new_paths)]
    lines += [
        f"~ path {p}"
        for p in sorted(old_paths & new_paths)
        if committed["paths"][p] != current["paths"][p]
    ]
    lines += [f"+ schema {s}" for s in sorted(set(new_schemas) - set(old_schemas))]
    lines += [f"- schema {s}" for s in sorted(set(old_schemas) - set(new_schemas))]
    lines += [
        f"~ schema {s}"
        for s in sorted(set(old_schemas) & set(new_schemas))
        if old_schemas[s] != new_schemas[s]
    ]
    if committed.get("info") != current.get("info"):
        lines.append("~ info (title/version/description)")
    return "\n".join(lines[:40]) or "(only ordering or other top-level keys differ)"


def test_committed_schema_matches_the_app() -> None:
    from backend.main import create_app

    assert SCHEMA.is_file(), f"frontend/openapi.json is missing: {HINT}"
    committed = json.loads(SCHEMA.read_text(encoding="utf-8"))
    current = create_app().openapi()
    # Round-trip through JSON so tuples/enums compare as the file stores them.
    current = json.loads(json.dumps(current))
    assert committed == current, (
        f"The web app's API client is stale: the API changed since frontend/openapi.json was "
        f"written; {HINT}.\n{_diff_summary(committed, current)}"
    )


def test_generated_client_was_made_from_the_committed_schema() -> None:
    assert STAMP.is_file(), f"frontend/src/client/openapi.sha256 is missing: {HINT}"
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert STAMP.read_text(encoding="utf-8").strip() == digest, (
        f"frontend/src/client/ was generated from another openapi.json; {HINT}."
    )
