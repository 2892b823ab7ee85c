"""`spondyscan client study PATH`: send one series to a server and wait for its answer.

PATH is a folder of DICOM instances (searched deeply; the server groups and orders them by
their headers), one zip of them, or one NIfTI volume. The study's JSON and its 3D mask are
written to ``--out``; a progress bar follows the server's phases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.client.errors import ClientError
from backend.client.session import SpondyscanClient


@dataclass
class StudyOutcome:
    study: dict[str, Any]
    json_path: Path
    mask_path: Path | None


def study_files(path: Path) -> list[tuple[str, bytes]]:
    """The files to send for PATH: every file of a folder, or the one zip or volume."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ClientError("no_files", f"{path} holds no files.")
        return [(str(p.relative_to(path)), p.read_bytes()) for p in files]
    if path.is_file():
        # One zip, one NIfTI volume, or one Enhanced MR (multi-frame) instance.
        return [(path.name, path.read_bytes())]
    raise ClientError("not_found", f"{path} does not exist.")


async def run_study(
    client: SpondyscanClient,
    path: Path,
    out: Path,
    *,
    models: list[str] | None = None,
    explain: bool = True,
    allow_out_of_domain: bool = False,
    progress: bool = True,
    timeout: float | None = None,
) -> StudyOutcome:
    """Upload the series, follow it to the end, write study.json (and mask.nii.gz)."""
    from tqdm import tqdm

    files = study_files(path)
    created = await client.submit_study(
        files, models=models, explain=explain, allow_out_of_domain=allow_out_of_domain
    )
    total = int(created["progress"]["slices_total"]) or 1
    bar = tqdm(total=total, unit="slice", desc="queued", disable=not progress)

    def on_progress(study: dict[str, Any]) -> None:
        p = study["progress"]
        bar.set_description(p.get("phase") or study["status"])
        bar.n = int(p["slices_done"])
        bar.refresh()

    try:
        study = await client.wait_study(created["id"], on_progress=on_progress, timeout=timeout)
    finally:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "study.json"
    json_path.write_text(json.dumps(study, indent=2) + "\n")
    mask_path = None
    if study["status"] == "done":
        mask_path = out / "mask.nii.gz"
        mask_path.write_bytes(await client.study_mask(study["id"]))
    return StudyOutcome(study, json_path, mask_path)


def describe(study: dict[str, Any]) -> list[str]:
    """A few lines a person reads: status, domain, each model's study-level answer."""
    lines = [f"study {study['id']}: {study['status']} ({study['slices']} slices)"]
    if study.get("error"):
        lines.append(f"  {study['error']['code']}: {study['error']['message']}")
    result = study.get("result")
    if not result:
        return lines
    domain = result["domain"]
    flag = "in the models' domain" if domain["in_domain"] else "OUT OF DOMAIN"
    lines.append(f"  {flag}; " + "; ".join(domain["reasons"]) if domain["reasons"] else f"  {flag}")
    if result["withheld"]:
        lines.append("  classifier outputs withheld (send with --allow-out-of-domain to see them)")
    key = (result.get("segmentation") or {}).get("key_slices") or []
    lines.append(f"  key slices: {key}")
    for m in result["models"]:
        lines.append(
            f"  {m['model']['key']}: AS {m['as_status']} ({m['as_probability']:.2f}), "
            f"stage {m['stage']} ({m['stage_probability']:.2f}); P(positive) mean "
            f"{m['p_positive_mean']:.2f} max {m['p_positive_max']:.2f}; "
            f"agreement {m['status_agreement']:.0%} of {m['slices']} slices; "
            f"labels: {m['label_provenance']['label_source']}"
        )
    return lines
