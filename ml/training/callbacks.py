"""Callbacks: the per-epoch log (CSV + one logging line per epoch) and the time budget."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import keras

logger = logging.getLogger(__name__)


class EpochRecorder(keras.callbacks.Callback):
    """Append each epoch's metrics (with stage, input size and learning rate) to a CSV.

    One file across all stages of a schedule, rewritten whole each epoch so it is always a
    complete CSV even when a run is interrupted.
    """

    def __init__(self, path: Path, rows: list[dict[str, Any]], stage: int, input_size: int):
        super().__init__()
        self.path = Path(path)
        self.rows = rows
        self.stage = stage
        self.input_size = input_size

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        lr = logs.pop("learning_rate", None)
        if lr is None:
            lr = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        row: dict[str, Any] = {
            "epoch": len(self.rows) + 1,
            "stage": self.stage,
            "input_size": self.input_size,
            "learning_rate": float(lr),
        }
        row.update({k: round(float(v), 6) for k, v in sorted(logs.items())})
        self.rows.append(row)
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()))
        logger.info("epoch %d (stage %d, %dpx): %s", row["epoch"], self.stage, self.input_size,
                    shown)  # fmt: skip


class TimeBudget(keras.callbacks.Callback):
    """Stop training at the end of the first epoch that finishes after ``deadline`` (a
    ``time.time()`` value): a run sized to a machine's time, kept whole (the bundle is still
    evaluated and written, and the manifest says the budget stopped it)."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = float(deadline)
        self.stopped = False

    def on_epoch_end(self, epoch, logs=None):
        if time.time() >= self.deadline:
            self.stopped = True
            self.model.stop_training = True
            logger.info("time limit reached after epoch %d: training stops here", epoch + 1)


def _monitor(name: str, has_val: bool) -> str:
    return name if has_val or not name.startswith("val_") else name[len("val_") :]


def _mode(monitor: str) -> str:
    return "min" if "loss" in monitor else "max"


def make_callbacks(cfg, stage_index, size, run_dir: Path, rows, has_val: bool):
    """Checkpoint, log, early stopping and LR reduction of one stage; returns them and the
    checkpoint path."""
    import keras

    t = cfg["training"]
    es = t["early_stopping"]
    rl = t["reduce_lr"]
    ck_monitor = _monitor(t["checkpoint"].get("monitor") or es["monitor"], has_val)
    checkpoint = run_dir / f"best_stage{stage_index}.weights.h5"
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            str(checkpoint),
            monitor=ck_monitor,
            mode=_mode(ck_monitor),
            save_best_only=True,
            save_weights_only=True,
            verbose=0,
        ),
        EpochRecorder(run_dir / "training_log.csv", rows, stage_index, size),
    ]
    if es:
        monitor = _monitor(es["monitor"], has_val)
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                mode=_mode(monitor),
                patience=int(es["patience"]),
                restore_best_weights=bool(es.get("restore_best_weights", False)),
                verbose=1,
            )
        )
    if rl:
        monitor = _monitor(rl["monitor"], has_val)
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                mode=_mode(monitor),
                factor=float(rl["factor"]),
                patience=int(rl["patience"]),
                min_lr=float(rl.get("min_lr", 1e-7)),
                verbose=1,
            )
        )
    return callbacks, checkpoint
