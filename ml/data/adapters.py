"""Ingest adapters: each turns one kind of source folder into the same list of items.

An :class:`Item` says where a slice's pixels are and what we know about it (subject, source,
level points, expert mask, clinical label). Adapters only list and join; pixels are decoded
later, one item at a time, by ``ml.data.prepare`` (so a bad file is skipped, with its reason,
instead of stopping the run).

- :func:`scan_kaggle`: the Kaggle "Lumbar Coordinate Pretraining Dataset" layout,
  ``processed_<source>/<stem>.npy`` (2D slices, or 3D volumes whose middle sagittal slice is
  taken), ``processed_<source>_jpgs/<stem>.jpg`` when there is no ``.npy``, and
  ``coords_pretrain.csv`` joined on (file stem, source). Images without coordinate rows and rows
  without images are reported, not fatal. ``tseg`` is CT and is left out unless asked for.
- :func:`scan_lumbar_mri`: the same layout plus ``slices.csv`` (subject ids, expert masks).
- :func:`scan_folder`: any folder of DICOM, NIfTI, ``.npy``, PNG or JPEG files.
- :func:`read_labels_csv` / :func:`attach_labels`: a CSV of labels a user already has.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ml.clierror import CliError
from ml.data.labels import STAGE_NAMES

CT_SOURCES = frozenset({"tseg"})
STRUCTURES = ("vertebral_body", "disc")
COORD_COLUMNS = ("filename", "source", "x", "y", "level")
SLICES_COLUMNS = ("filename", "source", "subject_id", "structure", "mask_path")
LABEL_COLUMNS = ("filename", "AS_status", "stage")
IMAGE_SUFFIXES = (".npy", ".jpg", ".jpeg", ".png", ".dcm", ".dicom", ".nii", ".nii.gz", ".ima")

# Filename endings that name a sequence or a slice rather than the subject ("1_t2", "02_s16").
_SUFFIX = re.compile(
    r"[_\-](?:t1w?|t2w?|t2_?space|stir|flair|tirm|pd|s\d+|slice_?\d+|sl\d+)$", re.IGNORECASE
)


@dataclass
class Item:
    """One slice to ingest (pixels not read yet)."""

    source: str
    subject_id: str
    source_path: str  # relative to the source root, POSIX separators
    image_path: Path
    points: dict[str, tuple[float, float]] = field(default_factory=dict)  # relative (0..1)
    mask_path: Path | None = None
    structure: str | None = None  # what the expert mask shows
    frame: int | None = None
    label: tuple[int, int] | None = None  # clinical (AS_status, stage)


@dataclass
class Scan:
    """What an adapter found: items, skipped files with reasons, and notes for the summary."""

    items: list[Item]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def subject_from_filename(stem: str, source: str = "") -> str:
    """Derive a subject id from a file stem: drop sequence/slice endings, prefix the source.

    ``"1_t2"`` (spider) -> ``"spider-1"``; ``"02_s16"`` -> ``"<source>-02"``;
    ``"case_0000"`` stays whole.
    """
    base = stem
    while True:
        new = _SUFFIX.sub("", base)
        if new == base or not new:
            break
        base = new
    return f"{source}-{base}" if source else base


def _stem(name: str) -> str:
    n = PurePosixPath(name).name
    for suf in (".nii.gz", ".npy", ".jpg", ".jpeg", ".png", ".dcm", ".nii"):
        if n.lower().endswith(suf):
            return n[: -len(suf)]
    return n.rsplit(".", 1)[0] if "." in n else n


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in cols]
            if missing:
                raise CliError(
                    f"{what} {path} has the wrong columns: missing {', '.join(missing)} "
                    f"(found: {', '.join(cols) or 'none'})"
                )
            return [
                {(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader
            ]
    except UnicodeDecodeError as exc:
        raise CliError(f"{what} {path} is not a UTF-8 text CSV") from exc


def _require_dir(root: Path) -> Path:
    if not root.exists():
        raise CliError(f"source folder not found: {root}")
    if not root.is_dir():
        raise CliError(f"source is not a folder: {root}")
    return root


def _read_coords(
    path: Path,
) -> tuple[dict[tuple[str, str], dict[str, tuple[float, float]]], dict[tuple[str, str], str]]:
    """coords_pretrain.csv -> ({(stem, source): {level: (rel_x, rel_y)}}, {key: filename}).

    Relative coordinates are used when present so points stay right whatever the image size;
    otherwise x, y are taken as pixels of a 256x256 slice (the Kaggle images' size).
    """
    rows = _read_csv(path, COORD_COLUMNS, "coordinates CSV")
    out: dict[tuple[str, str], dict[str, tuple[float, float]]] = defaultdict(dict)
    names: dict[tuple[str, str], str] = {}
    for i, r in enumerate(rows, start=2):
        try:
            if r.get("relative_x") and r.get("relative_y"):
                xy = (float(r["relative_x"]), float(r["relative_y"]))
            else:
                xy = (float(r["x"]) / 256.0, float(r["y"]) / 256.0)
        except ValueError as exc:
            raise CliError(f"coordinates CSV {path} line {i}: bad number ({exc})") from exc
        key = (_stem(r["filename"]), r["source"])
        out[key][r["level"]] = xy
        names.setdefault(key, r["filename"])
    return dict(out), names


def _layout_images(root: Path) -> dict[tuple[str, str], tuple[Path, str]]:
    """(stem, source) -> (file, relative path): ``.npy`` preferred over ``.jpg``."""
    found: dict[tuple[str, str], tuple[Path, str]] = {}
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("processed_"))
    # .npy folders first, so a .jpg twin never replaces its .npy.
    dirs.sort(key=lambda d: d.name.endswith("_jpgs"))
    for d in dirs:
        is_jpg = d.name.endswith("_jpgs")
        source = d.name[len("processed_") : -len("_jpgs") if is_jpg else None]
        for f in sorted(d.iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            key = (_stem(f.name), source)
            if key not in found:
                found[key] = (f, f.relative_to(root).as_posix())
    return found


def _ct_skip(source: str) -> str:
    return f"CT source ({source}) excluded; pass --include-ct to keep it"


def scan_kaggle(root: str | Path, include_ct: bool = False) -> Scan:
    """List the slices of a Kaggle-layout folder joined with their coordinates.

    Subject ids come from ``slices.csv`` when the folder has one, else from the file name
    (:func:`subject_from_filename`).

    Raises:
        CliError: missing folder, no ``coords_pretrain.csv``, wrong CSV columns, no images.
    """
    root = _require_dir(Path(root))
    coords_path = root / "coords_pretrain.csv"
    if not coords_path.is_file():
        raise CliError(f"no coords_pretrain.csv in {root} (not the Kaggle layout)")
    coords, coord_names = _read_coords(coords_path)
    images = _layout_images(root)
    if not images:
        raise CliError(f"no images in {root}: expected processed_<source>/ folders")
    subjects: dict[tuple[str, str], str] = {}
    if (root / "slices.csv").is_file():
        for r in _read_csv(root / "slices.csv", ("filename", "source", "subject_id"), "slices CSV"):
            subjects[(_stem(r["filename"]), r["source"])] = r["subject_id"]
    scan = Scan(items=[])
    for key in sorted(images):
        stem, source = key
        path, rel = images[key]
        if source in CT_SOURCES and not include_ct:
            scan.skipped.append((rel, _ct_skip(source)))
            continue
        pts = coords.get(key)
        if not pts:
            scan.skipped.append((rel, "no rows in coords_pretrain.csv (no level points)"))
            continue
        scan.items.append(
            Item(
                source=source,
                subject_id=subjects.get(key) or subject_from_filename(stem, source),
                source_path=rel,
                image_path=path,
                points=dict(pts),
            )
        )
    missing = [f"{k[1]}/{coord_names[k]}" for k in sorted(coords) if k not in images]
    if missing:
        examples = ", ".join(missing[:5])
        scan.notes.append(f"{len(missing)} coordinate entries have no image file (e.g. {examples})")
        for name in missing:
            scan.skipped.append((name, "row in coords_pretrain.csv without an image file"))
    return scan


def scan_lumbar_mri(root: str | Path, include_ct: bool = False) -> Scan:
    """List the slices of a ``lumbar_mri`` folder (Kaggle layout + ``slices.csv`` + masks).

    Raises:
        CliError: missing folder, no ``slices.csv``, wrong CSV columns, no images.
    """
    root = _require_dir(Path(root))
    slices_path = root / "slices.csv"
    if not slices_path.is_file():
        raise CliError(f"no slices.csv in {root} (not the lumbar_mri layout; try --source kaggle)")
    rows = _read_csv(slices_path, SLICES_COLUMNS, "slices CSV")
    coords_path = root / "coords_pretrain.csv"
    coords = _read_coords(coords_path)[0] if coords_path.is_file() else {}
    images = _layout_images(root)
    scan = Scan(items=[])
    if not coords_path.is_file():
        scan.notes.append("no coords_pretrain.csv: level points unavailable")
    listed = set()
    for i, r in enumerate(rows, start=2):
        key = (_stem(r["filename"]), r["source"])
        listed.add(key)
        name = f"{r['source']}/{r['filename']}"
        if r["source"] in CT_SOURCES and not include_ct:
            scan.skipped.append((name, _ct_skip(r["source"])))
            continue
        if key not in images:
            scan.skipped.append((name, "listed in slices.csv but no image file"))
            continue
        structure = r["structure"] or None
        if structure is not None and structure not in STRUCTURES:
            raise CliError(
                f"slices CSV {slices_path} line {i}: unknown structure {structure!r} "
                f"(expected {' or '.join(STRUCTURES)})"
            )
        mask_path = root / r["mask_path"] if r["mask_path"] else None
        if mask_path is not None and not mask_path.is_file():
            scan.notes.append(f"mask missing for {name}: {r['mask_path']}")
            mask_path = None
        path, rel = images[key]
        scan.items.append(
            Item(
                source=r["source"],
                subject_id=r["subject_id"] or subject_from_filename(key[0], r["source"]),
                source_path=rel,
                image_path=path,
                points=dict(coords.get(key, {})),
                mask_path=mask_path,
                structure=structure,
            )
        )
    for key in sorted(k for k in images if k not in listed):
        scan.skipped.append((images[key][1], "image not listed in slices.csv"))
    return scan


def _is_image_name(name: str) -> bool:
    low = name.lower()
    return low.endswith(IMAGE_SUFFIXES) or "." not in low  # DICOM files often have no suffix


def scan_folder(root: str | Path, source_name: str | None = None) -> Scan:
    """List every file of a plain folder (recursively) as a slice to try.

    Formats are recognised by content when read (DICOM, NIfTI mid-sagittal, ``.npy``, PNG,
    JPEG). Subject: the first sub-folder's name when files sit in per-subject folders, else the
    file name without sequence/slice endings. An expert mask is taken from
    ``masks/<same relative path>.png`` when present. Files named like text or tables are
    skipped with a reason.
    """
    root = _require_dir(Path(root))
    source = source_name or root.name
    scan = Scan(items=[])
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if not f.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        if rel.parts[0] == "masks":
            continue
        rel_s = rel.as_posix()
        if not _is_image_name(f.name):
            scan.skipped.append((rel_s, f"not an image file ({f.suffix or 'no suffix'})"))
            continue
        subject = rel.parts[0] if len(rel.parts) > 1 else subject_from_filename(_stem(f.name))
        mask = root / "masks" / rel.parent / f"{_stem(f.name)}.png"
        scan.items.append(
            Item(
                source=source,
                subject_id=f"{source}-{subject}",
                source_path=rel_s,
                image_path=f,
                mask_path=mask if mask.is_file() else None,
                structure=None,  # a user's mask is taken to show the target structure
            )
        )
    if not scan.items:
        raise CliError(f"no image files in {root}")
    return scan


def _parse_status(value: str) -> int:
    v = value.strip().lower()
    if v in ("1", "positive", "pos", "as+", "true", "yes"):
        return 1
    if v in ("0", "negative", "neg", "as-", "false", "no"):
        return 0
    raise ValueError(f"AS_status {value!r} is not 0/1 or negative/positive")


def _parse_stage(value: str) -> int:
    v = value.strip()
    names = [s.lower() for s in STAGE_NAMES]
    if v.lower() in names:
        return names.index(v.lower())
    if v.isdigit() and 0 <= int(v) <= 3:
        return int(v)
    raise ValueError(f"stage {value!r} is not 0..3 or one of {', '.join(STAGE_NAMES)}")


@dataclass
class LabelTable:
    """Clinical labels from a CSV: (AS_status, stage) and optional subject per file."""

    path: Path
    labels: dict[tuple[str, str], tuple[int, int]]  # (source or "", filename) -> label
    subjects: dict[tuple[str, str], str]


def read_labels_csv(path: str | Path) -> LabelTable:
    """Read a labels CSV: ``filename,AS_status,stage`` (+ optional ``subject_id``, ``source``).

    ``AS_status``: 0/1 or negative/positive; ``stage``: 0..3 or Normal/Early/Moderate/Advanced.
    ``filename`` is matched against the file's path relative to the source folder, its name,
    or its name without extension.

    Raises:
        CliError: file missing, wrong columns, or a bad value (with its line number).
    """
    p = Path(path)
    if not p.is_file():
        raise CliError(f"labels CSV not found: {p}")
    rows = _read_csv(p, LABEL_COLUMNS, "labels CSV")
    if not rows:
        raise CliError(f"labels CSV {p} has no rows")
    labels: dict[tuple[str, str], tuple[int, int]] = {}
    subjects: dict[tuple[str, str], str] = {}
    for i, r in enumerate(rows, start=2):
        try:
            status, stage = _parse_status(r["AS_status"]), _parse_stage(r["stage"])
        except ValueError as exc:
            raise CliError(f"labels CSV {p} line {i}: {exc}") from exc
        if status == 0 and stage != 0:
            raise CliError(f"labels CSV {p} line {i}: an AS-negative row must have stage Normal")
        key = (r.get("source", ""), r["filename"])
        labels[key] = (status, stage)
        if r.get("subject_id"):
            subjects[key] = r["subject_id"]
    return LabelTable(p, labels, subjects)


def attach_labels(scan: Scan, table: LabelTable) -> Scan:
    """Give each item its clinical label (and subject when the CSV names one).

    Items without a row are skipped with a reason; rows that match no item are reported.
    """
    used: set[tuple[str, str]] = set()
    kept: list[Item] = []
    for it in scan.items:
        name = PurePosixPath(it.source_path).name
        candidates = [it.source_path, name, _stem(name)]
        key = None
        for src in (it.source, ""):
            for c in candidates:
                if (src, c) in table.labels:
                    key = (src, c)
                    break
            if key:
                break
        if key is None:
            scan.skipped.append((it.source_path, f"no row in labels CSV {table.path.name}"))
            continue
        used.add(key)
        it.label = table.labels[key]
        if key in table.subjects:
            it.subject_id = table.subjects[key]
        kept.append(it)
    unused = sorted(k for k in table.labels if k not in used)
    if unused:
        scan.notes.append(
            f"{len(unused)} rows of {table.path.name} match no image "
            f"(e.g. {', '.join(f for _, f in unused[:5])})"
        )
    scan.items = kept
    return scan
