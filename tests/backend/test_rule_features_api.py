"""Rule-feature models explained in the rule's terms through /explain and /analyses; other
models (and a rule-feature bundle that ships no rule) get no ``features``."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import api_samples as samples
import httpx
import numpy as np
import pytest
from api_helpers import DatabaseUrls, app_on_models
from PIL import Image
from study_helpers import parts


def _rule_bundles(models: Path) -> None:
    """A tiny ordinal CNN with a fitted v2 rule in its bundle, and one without."""
    from ml.bundle import LABEL_RULE, make_random_bundle
    from ml.data.labels import fit_rule, image_features

    rng = np.random.default_rng(0)
    raw = [image_features(samples.phantom(seed) / 255.0) for seed in range(12)]
    # Spread the training distribution so the phantoms land between its percentiles.
    raw += [
        {k: v * rng.uniform(0.5, 1.5) for k, v in image_features(samples.phantom(s)).items()}
        for s in range(30)
    ]
    rule = fit_rule(raw, ["site"] * len(raw), "v2")
    path = make_random_bundle(models, "ordinal_tiny", "ordinal_cnn", task="classification")
    rule.save(path / LABEL_RULE)
    make_random_bundle(models, "ordinal_norule", "ordinal_cnn", task="classification", seed=1)


@pytest.fixture(scope="module")
async def client(
    databases: DatabaseUrls, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with app_on_models(databases, models_dir, tmp_path_factory, "rules", _rule_bundles) as c:
        yield c


def _check_features(fx: dict) -> None:
    """The breakdown adds up and its cut points say the stage it reports."""
    assert fx["rule_version"] == "v2" and fx["group"] == "*"
    assert [f["name"] for f in fx["features"]] == ["brightness", "texture", "edge_density"]
    assert [f["weight"] for f in fx["features"]] == [0.3, 0.4, 0.3]
    total = sum(f["contribution"] for f in fx["features"])
    assert total == pytest.approx(fx["score"], abs=1e-9)
    for f in fx["features"]:
        assert f["contribution"] == pytest.approx(f["weight"] * f["percentile"])
    names = ["AS positive", "Early", "Moderate", "Advanced"]
    assert [c["name"] for c in fx["cut_points"]] == names
    positive, *stages = fx["cut_points"]
    for c in fx["cut_points"]:
        assert c["crossed"] == (fx["score"] > c["value"])
    assert fx["as_status"] == ("positive" if positive["crossed"] else "negative")
    crossed = sum(c["crossed"] for c in stages) if positive["crossed"] else 0
    assert fx["stage"] == ["Normal", "Early", "Moderate", "Advanced"][crossed]
    model = fx["model"]
    assert [c["name"] for c in model["cut_points"]] == names
    assert fx["agrees"] == ((model["as_status"], model["stage"]) == (fx["as_status"], fx["stage"]))
    assert "not the model" in fx["note"]
    assert [m["name"] for m in fx["measurements"]] == ["mean", "lower_mean", "std", "edge_density"]


async def _png(c: httpx.AsyncClient, url: str, headers: dict) -> np.ndarray:
    r = await c.get(url, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)))


async def test_explain_adds_the_rules_breakdown_for_a_rule_feature_model(client) -> None:  # noqa: ANN001
    c, headers = client
    upload = samples.phantom_png(3)
    r = await c.post(
        "/explain", headers=headers, **parts([("s.png", upload)], "file", model="ordinal_tiny")
    )
    assert r.status_code == 200, r.text
    fx = r.json()["explanation"]["features"]
    assert fx is not None
    _check_features(fx)
    # The model part is the model's own answer: what /classify says for the same slice.
    r = await c.post(
        "/classify", headers=headers, **parts([("s.png", upload)], "file", models="ordinal_tiny")
    )
    answer = r.json()["classifications"][0]
    assert (fx["model"]["as_status"], fx["model"]["stage"]) == (
        answer["as_status"],
        answer["stage"],
    )
    # Each measurement's map is served; the mean map is the slice the models saw.
    maps = {m["name"]: await _png(c, m["map_url"], headers) for m in fx["measurements"]}
    shown = await _png(c, r.json()["image_url"], headers)
    assert all(m.shape == (256, 256) for m in maps.values())
    assert np.array_equal(maps["mean"], shown)
    assert not maps["lower_mean"][:128].any()
    mean = next(m for m in fx["measurements"] if m["name"] == "mean")
    assert float(maps["mean"].mean()) == pytest.approx(mean["value"])
    edges = next(m for m in fx["measurements"] if m["name"] == "edge_density")
    assert float((maps["edge_density"] > 0).mean()) == pytest.approx(edges["value"])


@pytest.mark.parametrize("model", ["cnn_tiny", "ordinal_norule"])
async def test_other_models_have_no_features(client, model: str) -> None:  # noqa: ANN001
    c, headers = client
    r = await c.post(
        "/explain",
        headers=headers,
        **parts([("s.png", samples.phantom_png(4))], "file", model=model, faithfulness=False),
    )
    assert r.status_code == 200, r.text
    assert r.json()["explanation"]["features"] is None


async def test_analysis_explains_each_model_in_its_terms_and_keeps_it(client) -> None:  # noqa: ANN001
    c, headers = client
    r = await c.post(
        "/analyses",
        headers=headers,
        **parts(
            [("s.png", samples.phantom_png(7))],
            "file",
            models=["ordinal_tiny", "cnn_tiny"],
            faithfulness=False,
        ),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    rule_model, plain = body["explanations"]
    assert plain["features"] is None
    _check_features(rule_model["features"])
    urls = [m["map_url"] for m in rule_model["features"]["measurements"]]
    assert all("ordinal_tiny" in u for u in urls) and len(set(urls)) == 4
    # History returns the breakdown as it was given.
    again = (await c.get(f"/history/{body['id']}", headers=headers)).json()
    assert again["explanations"][0]["features"] == rule_model["features"]
