"""The resumable record of a folder batch: ``results.csv`` and its journal ``results.csv.state``.

Each finished file is keyed by relative path and SHA-256, so a second run of the same batch
uploads only what is missing.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CSV_COLUMNS = [
    "path",
    "sha256",
    "status",
    "error_code",
    "error_message",
    "analysis_id",
    "model",
    "model_version",
    "as_status",
    "p_positive",
    "as_probability",
    "stage",
    "stage_probability",
    "faithfulness_score",
    "roi_x1",
    "roi_y1",
    "roi_x2",
    "roi_y2",
    "research_use_only",
]


@dataclass
class FileResult:
    """What happened to one file: analysed (``done``) or refused by the server (``failed``)."""

    path: str
    sha256: str
    status: str
    error_code: str = ""
    error_message: str = ""
    result: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.path, self.sha256

    def rows(self) -> list[dict[str, Any]]:
        """One CSV row per classifier (one bare row when there is no result)."""
        base = {
            "path": self.path,
            "sha256": self.sha256,
            "status": self.status,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "research_use_only": "true",
        }
        if not self.result:
            return [base]
        return _result_rows(base, self.result)


def _result_rows(base: dict[str, Any], res: dict[str, Any]) -> list[dict[str, Any]]:
    roi = ((res.get("segmentation") or {}).get("roi")) or {}
    faith = {
        e["model"]["key"]: (e.get("faithfulness") or {}).get("score")
        for e in res.get("explanations") or []
    }
    rows = []
    for c in res.get("classifications") or [{}]:
        model = (c.get("model") or {}).get("key", "")
        rows.append(
            {
                **base,
                "analysis_id": res.get("id", ""),
                "model": model,
                "model_version": (c.get("model") or {}).get("version", ""),
                "as_status": c.get("as_status", ""),
                "p_positive": (c.get("as_probabilities") or {}).get("positive", ""),
                "as_probability": c.get("as_probability", ""),
                "stage": c.get("stage", ""),
                "stage_probability": c.get("stage_probability", ""),
                "faithfulness_score": "" if faith.get(model) is None else faith[model],
                "roi_x1": roi.get("x1", ""),
                "roi_y1": roi.get("y1", ""),
                "roi_x2": roi.get("x2", ""),
                "roi_y2": roi.get("y2", ""),
            }
        )
    return rows


def _fsync_append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _write_atomic_text(path: Path, text: str) -> None:
    from ml.fsutil import write_atomic

    write_atomic(path, text.encode("utf-8"))


def _csv_text(rows: Iterable[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


class ResultsJournal:
    """results.csv plus its journal ``results.csv.state`` (one JSON line per finished file).

    A file counts as done once its journal line is on disk; the journal line is written after
    the file's CSV rows, so a crash in between leaves rows that the next run drops and redoes.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.state = self.out.with_name(self.out.name + ".state")
        self.finished: dict[tuple[str, str], str] = {}

    def load(self, *, retry_failed: bool = False) -> None:
        self._load_state(retry_failed)
        self._trim_csv()

    def _load_state(self, retry_failed: bool) -> None:
        entries: list[dict[str, Any]] = []
        rewrite_state = False
        if self.state.exists():
            for line in self.state.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    rewrite_state = True  # a line cut short by a crash
                    continue
                if not isinstance(entry, dict) or "path" not in entry:
                    continue
                if retry_failed and entry.get("status") == "failed":
                    rewrite_state = True
                    continue
                entries.append(entry)
        self.finished = {(e["path"], e["sha256"]): e["status"] for e in entries}
        if rewrite_state:
            _write_atomic_text(self.state, "".join(json.dumps(e) + "\n" for e in entries))

    def _trim_csv(self) -> None:
        """Drop CSV rows of files the journal does not count as finished (or a stale header)."""
        kept: list[dict[str, str]] = []
        dropped = False
        if self.out.exists():
            with open(self.out, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                dropped = reader.fieldnames != CSV_COLUMNS
                for row in reader:
                    if (row.get("path"), row.get("sha256")) in self.finished:
                        kept.append(row)
                    else:
                        dropped = True
        if dropped or not self.out.exists():
            self.out.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic_text(self.out, _csv_text(kept, header=True))

    def record(self, result: FileResult) -> None:
        _fsync_append(self.out, _csv_text(result.rows(), header=False))
        line = {"path": result.path, "sha256": result.sha256, "status": result.status}
        _fsync_append(self.state, json.dumps(line) + "\n")
        self.finished[result.key] = result.status
