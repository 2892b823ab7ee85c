"""Write the OpenAPI schema to a file (for the generated web-app client): `make client`."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def dump(path: str | Path) -> Path:
    """Write the app's OpenAPI document as sorted, pretty JSON (no models or database needed).

    Sorted keys keep the file byte-stable between runs, so a diff means the API changed.
    """
    from backend.main import create_app

    schema = create_app().openapi()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False)
    out.write_text(text + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    dump(sys.argv[1] if len(sys.argv) > 1 else "frontend/openapi.json")
