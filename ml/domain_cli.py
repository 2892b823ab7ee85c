"""``spondyscan domain fit``: the applicability-domain reference from a dataset's training split.

Writes ``models/domain_reference.npz`` (by default), which the service and ``spondyscan
analyze`` load to say whether an image is like the training slices (see :mod:`ml.domain`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``domain`` options."""
    sub = parser.add_subparsers(dest="domain_command", required=True)
    fit = sub.add_parser("fit", help="fit the reference on the training split")
    fit.add_argument("--dataset", required=True, help="a folder written by spondyscan prepare")
    fit.add_argument("--out", default="models/domain_reference.npz", help="where to write it")
    fit.add_argument("--split", default="train", help="split to fit on (default train)")


def run(args: argparse.Namespace) -> int:
    from ml import RESEARCH_USE_NOTICE
    from ml.clierror import CliError
    from ml.data.dataset import load_split
    from ml.domain import fit_reference, image_features
    from ml.fsutil import write_atomic

    try:
        data = load_split(args.dataset, args.split)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc
    if len(data) < 10:
        raise CliError(f"the {args.split} split has {len(data)} images; fit needs at least 10")
    reference = fit_reference(
        data.images[..., 0],
        info={
            "dataset_hash": data.dataset_hash,
            "dataset": Path(args.dataset).name,
            "split": args.split,
            "sources": sorted({str(s) for s in data.sources}),
        },
    )
    out = Path(args.out)
    write_atomic(out, reference.to_bytes())
    features = np.stack([image_features(i) for i in data.images[..., 0]])
    scores = reference.score_features(features)
    inside = sum(s.in_domain for s in scores) / len(scores)
    print(f"wrote {out} ({len(data)} {args.split} images; {100 * inside:.1f} % of them inside)")
    print(RESEARCH_USE_NOTICE)
    return 0
