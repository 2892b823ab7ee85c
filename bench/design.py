"""The design-style service, rebuilt for the benchmark: a one-request-at-a-time WSGI server.

For every request it does what the design's Flask app did: decode the upload, call Keras
``model.predict`` on each selected model, compute Grad-CAM eagerly with a ``GradientTape``
through a gradient model built for that request (the keras-io recipe), focus it with the fixed
box, draw overlays with OpenCV, write them under a per-result folder and insert a row into
SQLite. It loads the same bundles (same weights) and uses the same decoder and preprocessing as
the service, so the comparison measures the serving design, not different inputs or models.

Run: ``python -m bench.design --port 8765 --models-dir models --data-dir /tmp/design``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import time
import uuid
from email.parser import BytesParser
from email.policy import default as email_policy
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy as np

log = logging.getLogger("bench.design")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


def parse_multipart(environ: dict[str, Any]) -> tuple[dict[str, list[str]], bytes | None]:
    """Form fields and the `file` part of a multipart/form-data request."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    ctype = environ.get("CONTENT_TYPE", "")
    msg = BytesParser(policy=email_policy).parsebytes(
        b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body
    )
    fields: dict[str, list[str]] = {}
    data = None
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "file":
            data = payload
        elif name:
            fields.setdefault(name, []).append(payload.decode("utf-8"))
    return fields, data


class DesignApp:
    """Per-request model.predict and eager Grad-CAM; results as files plus an SQLite row."""

    def __init__(self, models_dir: Path, data_dir: Path) -> None:
        from ml.bundle import discover_bundles, load_bundle

        self.bundles = {}
        for path in discover_bundles(models_dir):
            b = load_bundle(path)
            self.bundles[b.key] = b
        self.defaults = {}
        for task in ("segmentation", "classification"):
            keys = sorted(k for k, b in self.bundles.items() if b.task == task)
            flagged = [k for k in keys if self.bundles[k].manifest.default]
            if keys:
                self.defaults[task] = (flagged or keys)[0]
        self.results = data_dir / "static" / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(data_dir / "design.db", check_same_thread=False)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS predictions (id TEXT PRIMARY KEY, kind TEXT, "
            "as_status TEXT, stage TEXT, confidence REAL, result TEXT, ts REAL)"
        )
        self.db.commit()

    # ------------------------------------------------------------------ the design's steps

    def _image(self, data: bytes) -> np.ndarray:
        from ml.io import read_image, require_content
        from ml.preprocessing import preprocess

        loaded = read_image(data)
        require_content(loaded.pixels)
        return preprocess(loaded.pixels, 256)

    def _gradcam(self, model: Any, x: np.ndarray, layer: str) -> np.ndarray:
        """keras-io's make_gradcam_heatmap: a new gradient model and an eager tape per call."""
        import keras
        import tensorflow as tf

        outputs = model.outputs if len(model.outputs) > 1 else [model.output]
        grad_model = keras.models.Model(model.inputs, [model.get_layer(layer).output, outputs[0]])
        with tf.GradientTape() as tape:
            conv_out, preds = grad_model(x)
            index = tf.argmax(preds[0])
            class_channel = preds[:, index]
        grads = tape.gradient(class_channel, conv_out)
        pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
        heatmap = tf.squeeze(conv_out[0] @ pooled[..., tf.newaxis])
        heatmap = tf.maximum(heatmap, 0) / (tf.math.reduce_max(heatmap) + 1e-12)
        return heatmap.numpy()

    def _overlay(self, image: np.ndarray, heatmap: np.ndarray, out: Path) -> None:
        import cv2

        h, w = image.shape
        heat = cv2.resize(np.asarray(heatmap, np.float32), (w, h))
        # The design's fixed focus box: rows 50-90 %, columns 30-70 %.
        focus = np.zeros_like(heat)
        focus[h * 50 // 100 : h * 90 // 100, w * 30 // 100 : w * 70 // 100] = 1
        heat = heat * focus
        heat = heat / (heat.max() + 1e-12)
        jet = cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET)
        gray = cv2.cvtColor(np.uint8(255 * image), cv2.COLOR_GRAY2BGR)
        cv2.imwrite(str(out), cv2.addWeighted(gray, 0.6, jet, 0.4, 0))

    def handle(self, kind: str, fields: dict[str, list[str]], data: bytes) -> dict[str, Any]:
        import cv2

        image = self._image(data)
        x = image[None, ..., None]
        rid = str(uuid.uuid4())
        folder = self.results / rid
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "input.png"), np.uint8(255 * image))
        result: dict[str, Any] = {"id": rid, "kind": kind}
        if kind in ("segment", "analysis"):
            seg = self.bundles[self.defaults["segmentation"]]
            prob = np.asarray(seg.model.predict(x, verbose=0))[0, ..., 0]
            mask = (prob >= 0.5).astype(np.uint8)
            cv2.imwrite(str(folder / "mask.png"), mask * 255)
            result["segmentation"] = {"model": seg.key, "mask_fraction": float(mask.mean())}
        keys = fields.get("models") or [self.defaults["classification"]]
        status = stage = None
        confidence = None
        if kind in ("classify", "analysis"):
            result["classifications"] = []
            for key in keys:
                b = self.bundles[key]
                p_status, p_stage = b.model.predict(x, verbose=0)
                si, gi = int(np.argmax(p_status[0])), int(np.argmax(p_stage[0]))
                result["classifications"].append(
                    {"model": key, "as_status": si, "stage": gi, "p": float(p_status[0][si])}
                )
                if status is None:
                    status, stage, confidence = str(si), str(gi), float(p_status[0][si])
        if kind in ("explain", "analysis"):
            explain_keys = keys if kind == "analysis" else keys[:1]
            result["explanations"] = []
            for key in explain_keys:
                b = self.bundles[key]
                heat = self._gradcam(b.model, x, b.manifest.gradcam_layer)
                self._overlay(image, heat, folder / f"gradcam_{key}.png")
                result["explanations"].append({"model": key})
        self.db.execute(
            "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rid, kind, status, stage, confidence, json.dumps(result), time.time()),
        )
        self.db.commit()
        return result

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        kinds = {
            "/classify": "classify",
            "/segment": "segment",
            "/explain": "explain",
            "/analyses": "analysis",
        }
        try:
            if path == "/health":
                body, status = {"status": "ok"}, "200 OK"
            elif path in kinds and environ["REQUEST_METHOD"] == "POST":
                fields, data = parse_multipart(environ)
                body, status = self.handle(kinds[path], fields, data or b""), "200 OK"
            else:
                body, status = {"code": "not_found"}, "404 Not Found"
        except Exception as exc:  # noqa: BLE001 - the bench reports errors, it does not crash
            log.exception("request failed")
            body, status = {"code": "error", "message": str(exc)}, "500 Internal Server Error"
        raw = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(raw)))]
        )
        return [raw]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING)
    app = DesignApp(args.models_dir, args.data_dir)
    # wsgiref's server handles one request at a time, like the design's development server.
    with make_server("127.0.0.1", args.port, app, handler_class=_QuietHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
