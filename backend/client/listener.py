"""A DICOM C-STORE receiver (DIMSE, pynetdicom) in front of a server (`spondyscan dicom-listen`).

Modalities and PACS that speak only DIMSE send a series to this listener as they would to any
archive. Each received instance is written to a spool folder first (so nothing acknowledged is
lost if the listener or the server stops), grouped by series; once a series has received nothing
for ``--stable-seconds`` (as Orthanc's "stable series"), it is sent to the server by STOW-RS
(``POST /dicomweb/studies``, with the API key), which stores it and starts a study analysis.

What happens to a spooled series:

* accepted by the server (200) -> one line in ``<spool>/forwarded.jsonl`` (series, study id and
  URL, instances stored) and the instances are deleted;
* accepted in part (202) -> the same, and the instances the server refused are moved to
  ``<spool>/failed/<series>/`` with ``error.json`` (each one's SOP instance UID and reason);
* refused for good (4xx: not an image series, too large) -> moved to ``<spool>/failed/<series>/``
  with ``error.json`` (the code and sentence), kept for a person;
* the server is away or busy, or refuses the listener's own credentials (401/403: a key revoked
  or a token expired is fixed by a person, not by the series) -> left where it is and sent again
  on the next round;
* anything unexpected (a proxy answering HTML, a disk error) -> logged and tried again, and
  after ``max_attempts`` rounds moved to ``failed/`` like a refusal. The listener keeps running.

A series is stable once no association that delivered to it is still open and nothing arrived
for ``stable_seconds``. Instances of a series that arrive after it was sent form a new batch (and
so a second study). Research use only.
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
CREDENTIAL_STATUSES = (401, 403)
DEFAULT_MAX_SERIES_BYTES = 1024**3  # the server's default upload limit for one study


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
        stable_seconds: a series is sent once it received nothing for this long (and no
            association that delivered to it is open).
        max_series_bytes: a series that grows past this is refused (out of resources) rather
            than spooled without limit (the server's default study limit).
        allowed_aets: calling AE titles allowed to associate; empty = any.
        max_attempts: rounds a series may fail unexpectedly before it is moved to ``failed/``.
    """

    spool: Path
    ae_title: str = "SPONDYSCAN"
    stable_seconds: float = 30.0
    max_series_bytes: int = DEFAULT_MAX_SERIES_BYTES
    allowed_aets: tuple[str, ...] = ()
    max_attempts: int = 5
    received: int = 0
    refused: int = 0
    # The latest outcomes (the full record is forwarded.jsonl).
    forwarded: deque[Forwarded] = field(default_factory=lambda: deque(maxlen=1000))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _bytes: dict[str, int] = field(default_factory=dict, repr=False)  # spooled, per series
    _open: dict[int, set[str]] = field(default_factory=dict, repr=False)  # association -> series
    _attempts: dict[str, int] = field(default_factory=dict, repr=False)  # sending folder -> fails
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
        if self.allowed_aets:
            ae.require_calling_aet = list(self.allowed_aets)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        self._server = ae.start_server((host, port), block=False, evt_handlers=handlers)
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
        target = folder / f"{sop}.dcm"
        try:
            data = event.encoded_dataset()
            with self._lock:
                # The series is open while this association is: it is not sent meanwhile, so the
                # write below needs no lock.
                self._open.setdefault(id(event.assoc), set()).add(series)
                folder.mkdir(parents=True, exist_ok=True)
                if series not in self._bytes:  # e.g. left in the spool by an earlier run
                    self._bytes[series] = sum(p.stat().st_size for p in folder.glob("*.dcm"))
                before = target.stat().st_size if target.exists() else 0  # sent again
                grows = len(data) - before
                if self._bytes[series] + grows > self.max_series_bytes:
                    self.refused += 1
                    log.warning(
                        "series %s is over %d bytes; refused", series, self.max_series_bytes
                    )
                    return OUT_OF_RESOURCES
                self._bytes[series] += grows
            try:
                _write_durably(folder, target, data)
            except OSError:
                with self._lock:
                    self._bytes[series] -= grows
                raise
            with self._lock:
                self.received += 1
        except OSError:
            log.exception("could not spool an instance of series %s", series)
            return OUT_OF_RESOURCES
        return SUCCESS

    def _on_close(self, event: Any) -> None:
        """An association ended (released, aborted or dropped): its series may become stable."""
        with self._lock:
            self._open.pop(id(event.assoc), None)

    # ------------------------------------------------------------------ server side

    def stable_series(self, now: float | None = None) -> list[Path]:
        """Spooled series that no open association is delivering to and that received nothing
        for ``stable_seconds`` (and those left in ``sending`` by an earlier run or round)."""
        now = time.time() if now is None else now
        ready = [p for p in (self.spool / SENDING).iterdir() if p.is_dir()]
        with self._lock:
            receiving = set().union(*self._open.values())
            for folder in (self.spool / INCOMING).iterdir():
                if folder.name in receiving:
                    continue
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
        for folder in await asyncio.to_thread(self.stable_series, now):
            try:
                outcome = await self._forward(client, folder)
            except Exception as exc:  # noqa: BLE001 - one series must not stop the listener
                outcome = await self._unexpected(folder, exc)
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
            if exc.status in CREDENTIAL_STATUSES:
                log.error(
                    "the server refused this listener's credentials (%s); series %s is kept and "
                    "sent again once they work",
                    exc.code,
                    series,
                )
                return None
            if not exc.permanent:
                log.warning("series %s not sent (%s); trying again later", series, exc.message)
                return None
            outcome.error = {"code": exc.code, "message": exc.message, "status": exc.status}
            await self._set_aside(folder, outcome.error)
            log.error("series %s refused: %s (%s)", series, exc.message, exc.code)
        else:
            outcome.study_id, outcome.study_url = answer["study_id"], answer["study_url"]
            outcome.refused_instances = len(answer["refused"])
            if answer["refused"]:
                await asyncio.to_thread(self._keep_refused, folder, answer["refused"])
            await asyncio.to_thread(shutil.rmtree, folder)
            log.info("series %s (%d instances) -> study %s", series, len(files), outcome.study_id)
        self._record(outcome)
        return outcome

    async def _unexpected(self, folder: Path, exc: Exception) -> Forwarded | None:
        """Count an unexpected failure; after ``max_attempts`` set the series aside."""
        series = folder.name.rsplit("-", 1)[0]
        n = self._attempts[folder.name] = self._attempts.get(folder.name, 0) + 1
        log.exception("series %s could not be forwarded (attempt %d)", series, n, exc_info=exc)
        if n < self.max_attempts or not folder.is_dir():
            return None
        outcome = Forwarded(series, len(list(folder.glob("*.dcm"))))
        outcome.error = {
            "code": "forward_error",
            "message": f"{type(exc).__name__}: {exc}"[:500],
            "status": None,
        }
        await self._set_aside(folder, outcome.error)
        self._record(outcome)
        return outcome

    async def _set_aside(self, folder: Path, error: dict[str, Any]) -> None:
        """Move a series to ``failed/`` with ``error.json``, for a person to look at."""
        target = self.spool / FAILED / folder.name
        await asyncio.to_thread(os.replace, folder, target)
        await asyncio.to_thread((target / "error.json").write_text, json.dumps(error, indent=2))
        self._attempts.pop(folder.name, None)
        log.error("kept in %s", target)

    def _keep_refused(self, folder: Path, refused: list[dict[str, Any]]) -> None:
        """Move the instances the server refused (a 202) to ``failed/`` with their reasons
        (those it could not even name are not told apart in the spool and go with the rest)."""
        target = self.spool / FAILED / folder.name
        target.mkdir(parents=True, exist_ok=True)
        kept = []
        for item in refused:
            sop = _safe_uid(item["sop_instance_uid"])
            path = folder / f"{sop}.dcm"
            if sop is not None and path.is_file():
                os.replace(path, target / path.name)
                kept.append(item)
        error = {
            "code": "refused_instances",
            "message": "The server stored the series without these instances.",
            "status": 202,
            "instances": kept,
        }
        (target / "error.json").write_text(json.dumps(error, indent=2))

    def _record(self, outcome: Forwarded) -> None:
        with (self.spool / FORWARDED_LOG).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(outcome.__dict__) + "\n")
        self.forwarded.append(outcome)

    async def serve_forever(self, client: SpondyscanClient, interval: float = 1.0) -> None:
        """Forward stable series every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.forward_ready(client)
            except Exception:  # noqa: BLE001 - e.g. the spool's disk: log it and go on
                log.exception("a forwarding round failed; trying again")
            await asyncio.sleep(interval)


def _write_durably(folder: Path, target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically and on disk before the store is acknowledged."""
    tmp = folder / f".{target.stem}.{uuid.uuid4().hex}.part"
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
