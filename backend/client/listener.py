"""A DICOM C-STORE receiver (DIMSE, pynetdicom) in front of a server (`spondyscan dicom-listen`).

Modalities and PACS that speak only DIMSE send a series to this listener as they would to any
archive. Each received instance is written to a spool folder first (so nothing acknowledged is
lost if the listener or the server stops), grouped by series; once a series has received nothing
for ``--stable-seconds`` (as Orthanc's "stable series"), it is sent to the server by STOW-RS
(``POST /dicomweb/studies``, with the API key), which stores it and starts a study analysis.

What happens to a spooled series:

* accepted by the server (200, or 202 with some instances refused) -> one line in
  ``<spool>/forwarded.jsonl`` (series, study id and URL, instances stored and refused) and the
  instances are deleted;
* refused for good (4xx: bad key, not an image series, too large) -> moved to
  ``<spool>/failed/<series>/`` with ``error.json`` (the code and sentence), kept for a person;
* the server is away or busy -> left where it is and sent again on the next round.

A series still being received when its turn comes is sent as it stands; instances of it that
arrive later form a new series batch (and so a second study). Research use only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.client.errors import ClientError
from backend.client.session import SpondyscanClient

log = logging.getLogger(__name__)

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# C-STORE statuses (PS3.4 Annex B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
INCOMING, SENDING, FAILED = "incoming", "sending", "failed"
FORWARDED_LOG = "forwarded.jsonl"


def _safe_uid(value: Any) -> str | None:
    text = str(value or "").strip()
    return text if len(text) <= 64 and UID.match(text) else None


@dataclass
class Forwarded:
    """One series sent to the server: its study, or why it was refused."""

    series_uid: str
    instances: int
    study_id: str | None = None
    study_url: str | None = None
    refused_instances: int = 0
    error: dict[str, Any] | None = None


@dataclass
class DicomListener:
    """A C-STORE SCP that spools instances by series; :meth:`forward_ready` sends the stable ones.

    Args:
        spool: the folder instances wait in (created).
        ae_title: this listener's application entity title.
        stable_seconds: a series is sent once it received nothing for this long.
        max_series_bytes: a series that grows past this is refused (out of resources) rather
            than spooled without limit; the server's own upload limit applies anyway.
    """

    spool: Path
    ae_title: str = "SPONDYSCAN"
    stable_seconds: float = 5.0
    max_series_bytes: int = 2 * 1024**3
    received: int = 0
    refused: int = 0
    # The latest outcomes (the full record is forwarded.jsonl).
    forwarded: deque[Forwarded] = field(default_factory=lambda: deque(maxlen=1000))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _bytes: dict[str, int] = field(default_factory=dict, repr=False)  # spooled, per series
    _server: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.spool = Path(self.spool)
        for sub in (INCOMING, SENDING, FAILED):
            (self.spool / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ DIMSE side

    def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` in background threads; returns the port bound."""
        from pynetdicom import AE, StoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = StoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            (host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        bound = int(self._server.server_address[1])
        log.info("listening for DICOM (C-STORE, C-ECHO) as %s on %s:%d", self.ae_title, host, bound)
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_store(self, event: Any) -> int:
        """Write one received instance to its series' spool folder (atomically)."""
        try:
            ds = event.dataset
            series, sop = (
                _safe_uid(ds.get("SeriesInstanceUID")),
                _safe_uid(ds.get("SOPInstanceUID")),
            )
        except Exception:  # noqa: BLE001 - an undecodable dataset is refused, not a crash
            series = sop = None
        if series is None or sop is None:
            with self._lock:
                self.refused += 1
            log.warning("refused an instance without valid series and SOP instance UIDs")
            return CANNOT_UNDERSTAND
        folder = self.spool / INCOMING / series
        try:
            data = event.encoded_dataset()
            with self._lock:
                folder.mkdir(parents=True, exist_ok=True)
                if series not in self._bytes:  # e.g. left in the spool by an earlier run
                    self._bytes[series] = sum(p.stat().st_size for p in folder.glob("*.dcm"))
                used = self._bytes[series]
                if used + len(data) > self.max_series_bytes:
                    self.refused += 1
                    log.warning(
                        "series %s is over %d bytes; refused", series, self.max_series_bytes
                    )
                    return OUT_OF_RESOURCES
                tmp = folder / f".{sop}.{uuid.uuid4().hex}.part"
                tmp.write_bytes(data)
                os.replace(tmp, folder / f"{sop}.dcm")
                self._bytes[series] = used + len(data)
                self.received += 1
        except OSError:
            log.exception("could not spool an instance of series %s", series)
            return OUT_OF_RESOURCES
        return SUCCESS

    # ------------------------------------------------------------------ server side

    def stable_series(self, now: float | None = None) -> list[Path]:
        """Spooled series that received nothing for ``stable_seconds`` (and those left in
        ``sending`` by an earlier run that stopped mid-way)."""
        now = time.time() if now is None else now
        ready = [p for p in (self.spool / SENDING).iterdir() if p.is_dir()]
        with self._lock:
            for folder in (self.spool / INCOMING).iterdir():
                files = (
                    [p for p in folder.iterdir() if p.suffix == ".dcm"] if folder.is_dir() else []
                )
                if files and now - max(p.stat().st_mtime for p in files) >= self.stable_seconds:
                    # Taken out of `incoming` under the lock: what arrives later starts afresh.
                    target = self.spool / SENDING / f"{folder.name}-{uuid.uuid4().hex[:8]}"
                    os.replace(folder, target)
                    self._bytes.pop(folder.name, None)
                    ready.append(target)
        return sorted(ready)

    async def forward_ready(
        self, client: SpondyscanClient, now: float | None = None
    ) -> list[Forwarded]:
        """Send every stable series; returns what was accepted or refused this round."""
        done = []
        for folder in self.stable_series(now):
            outcome = await self._forward(client, folder)
            if outcome is not None:
                done.append(outcome)
        return done

    async def _forward(self, client: SpondyscanClient, folder: Path) -> Forwarded | None:
        series = folder.name.rsplit("-", 1)[0]
        files = sorted(folder.glob("*.dcm"))
        instances = await asyncio.to_thread(lambda: [p.read_bytes() for p in files])
        outcome = Forwarded(series, len(files))
        try:
            answer = await client.stow(instances)
        except ClientError as exc:
            if not exc.permanent:
                log.warning("series %s not sent (%s); trying again later", series, exc.message)
                return None
            outcome.error = {"code": exc.code, "message": exc.message, "status": exc.status}
            target = self.spool / FAILED / folder.name
            await asyncio.to_thread(os.replace, folder, target)
            await asyncio.to_thread(
                (target / "error.json").write_text, json.dumps(outcome.error, indent=2)
            )
            log.error(
                "series %s refused: %s (%s); kept in %s", series, exc.message, exc.code, target
            )
        else:
            outcome.study_id, outcome.study_url = answer["study_id"], answer["study_url"]
            outcome.refused_instances = answer["failed"]
            await asyncio.to_thread(shutil.rmtree, folder)
            log.info("series %s (%d instances) -> study %s", series, len(files), outcome.study_id)
        with (self.spool / FORWARDED_LOG).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(outcome.__dict__) + "\n")
        self.forwarded.append(outcome)
        return outcome

    async def serve_forever(self, client: SpondyscanClient, interval: float = 1.0) -> None:
        """Forward stable series every ``interval`` seconds until cancelled."""
        while True:
            await self.forward_ready(client)
            await asyncio.sleep(interval)
