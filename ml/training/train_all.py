"""Train every shipped model: `python -m ml.training.train_all --dataset DIR [--configs a,b]`.

Runs the configs in ``ml/configs`` one after another (the CPU is the bottleneck; running them
side by side only slows each down). A config whose bundle another selected config already
writes as a derived bundle (``unet_best`` comes from the ``attention_unet`` run) is skipped.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ml.manifest import Manifest
from ml.training.cli import epoch_caps
from ml.training.config import CONFIG_DIR, load_config

logger = logging.getLogger(__name__)


def shipped_configs() -> list[str]:
    """Config keys in ``ml/configs`` (file stems), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def plan(keys: list[str]) -> list[tuple[str, dict]]:
    """(key, config) to run, skipping keys produced as derived bundles of another run; a config
    that starts from another's bundle (training.init_from) runs after it."""
    configs = {k: load_config(CONFIG_DIR / f"{k}.yaml") for k in keys}
    derived = {d["key"] for c in configs.values() for d in c["bundle"]["derived"] or []}
    todo = [(k, c) for k, c in configs.items() if k not in derived]
    return sorted(todo, key=lambda kc: kc[1]["training"]["init_from"] in configs)


def default_score(manifest: Manifest) -> float | None:
    """How a bundle ranks for its task's default: IoU, or the mean of AS-status accuracy and
    stage macro-F1 (so a model that ignores the rare stages does not win on accuracy alone)."""
    m = manifest.metrics
    if manifest.task == "segmentation":
        return m.iou
    if m.binary_accuracy is None or m.stage_macro_f1 is None:
        return None
    return (float(m.binary_accuracy) + float(m.stage_macro_f1)) / 2.0


def select_defaults(models_dir: str | Path) -> dict[str, str]:
    """Mark the best measured bundle of each task as the registry default (manifests rewritten
    atomically, weights untouched); returns task -> key."""
    from ml.bundle import discover_bundles, read_manifest, update_manifest

    best: dict[str, tuple[float, Path]] = {}
    manifests = {p: read_manifest(p) for p in discover_bundles(models_dir)}
    for path, manifest in manifests.items():
        score = default_score(manifest)
        if score is not None and score > best.get(manifest.task, (-1.0, path))[0]:
            best[manifest.task] = (score, path)
    chosen = {task: path for task, (_, path) in best.items()}
    for path, manifest in manifests.items():
        is_default = chosen.get(manifest.task) == path
        if manifest.default != is_default:
            update_manifest(path, {"default": is_default})
    return {task: manifests[path].key for task, path in chosen.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.training.train_all", description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--configs", help="comma-separated keys (default: all in ml/configs)")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument(
        "--epochs", type=epoch_caps, help="cap every stage at N epochs, or each at its own: N,M"
    )
    parser.add_argument("--list", action="store_true", help="show the plan and exit")
    parser.add_argument(
        "--no-defaults", action="store_true", help="do not re-pick the registry defaults"
    )
    parser.add_argument(
        "--select-defaults",
        action="store_true",
        help="only re-pick the registry defaults from the bundles' measured metrics",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.select_defaults:
        for task, key in select_defaults(args.models_dir).items():
            print(f"default {task} model: {key}")
        return 0
    keys = args.configs.split(",") if args.configs else shipped_configs()
    unknown = [k for k in keys if not (CONFIG_DIR / f"{k}.yaml").is_file()]
    if unknown:
        print(f"error: no config for {', '.join(unknown)} in {CONFIG_DIR}", file=sys.stderr)
        return 2
    todo = plan(keys)
    for key, cfg in todo:
        derived = [d["key"] for d in cfg["bundle"]["derived"] or []]
        extra = f" (+ {', '.join(derived)})" if derived else ""
        print(f"- {key}: {cfg['architecture']}{extra}")
    if args.list:
        return 0
    if not Path(args.dataset, "annotations", "dataset.csv").is_file():
        print(f"error: {args.dataset} is not a prepared dataset (run `make prepare`)",
              file=sys.stderr)  # fmt: skip
        return 2
    from ml.training.loop import train

    failures = []
    for key, cfg in todo:
        started = time.time()
        try:
            result = train(cfg, args.dataset, models_dir=args.models_dir, epochs=args.epochs)
        except Exception:
            logger.exception("training %s failed", key)
            failures.append(key)
            continue
        print(f"{key}: done in {(time.time() - started) / 60:.1f} min -> {result.bundle_dir}")
    if not args.no_defaults:
        for task, key in select_defaults(args.models_dir).items():
            print(f"default {task} model: {key}")
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
