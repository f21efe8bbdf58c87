"""serving/catalogue.py: product texts validated, kept across restarts, encoded by every model loaded."""

from __future__ import annotations

import json

import pytest

from riskops.features.contract import transaction_text
from serving.catalogue import Catalogue, product_texts
from serving.validation import RequestError

LAMP = {"product_title": "Desk lamp", "product_category": "home", "merchant_category": "home furnishings"}


def test_product_texts_are_the_model_text_and_every_problem_is_named():
    assert product_texts([LAMP]) == [transaction_text(LAMP)]
    with pytest.raises(RequestError) as err:
        product_texts([LAMP, {**LAMP, "product_title": " "}, {"product_category": "x"}, 3])
    msg = str(err.value)
    for where in ("products[1].product_title", "products[2].product_title", "products[2].merchant_category",
                  "products[3]"):  # fmt: skip
        assert where in msg
    assert "products[0]" not in msg


def test_catalogue_keeps_distinct_texts_across_restarts_and_skips_a_torn_line(tmp_path):
    path = tmp_path / "catalogue.jsonl"
    cat = Catalogue(path)
    assert cat.add(["a", "b", "a"]) == ["a", "b"]
    assert cat.add(["b", "c"]) == ["c"]
    with open(path, "a") as fh:
        fh.write('"half-writ')  # a crash mid-append
    again = Catalogue(path)
    assert again.texts() == ["a", "b", "c"]
    assert again.add(["d"]) == ["d"] and Catalogue(path).texts()[-1] == "d"
    assert [json.loads(x) for x in path.read_text().splitlines() if x.startswith('"d')] == ["d"]


def test_a_model_loaded_later_encodes_the_catalogue_before_it_serves(tmp_path):
    """What a hot swap or a canary challenger gets: load_model(..., extra_texts=catalogue)."""
    from riskops.data.generator import GeneratorConfig, generate, product_catalogue
    from riskops.training.finetune import TrainConfig, train_from_training_set
    from serving.predictor import load_model

    config = GeneratorConfig(rows=600, seed=4, fraud_rate=0.05)
    trained = train_from_training_set(
        generate(config), tmp_path / "m", TrainConfig(encoder="tiny", epochs=1, max_steps=2, progress=False,
                                                      num_threads=1),
    )  # fmt: skip
    texts = product_texts(product_catalogue(config).head(40).to_dict("records"))
    fresh = [f"{t} (new)" for t in texts[:5]]
    lm = load_model(trained.model_dir, extra_texts=fresh)
    assert all(lm.scorer.is_cached(t) for t in fresh)
    control = load_model(trained.model_dir)
    assert not any(control.scorer.is_cached(t) for t in fresh)


def test_the_generator_catalogue_covers_its_traffic():
    from riskops.data.generator import GeneratorConfig, generate, product_catalogue

    config = GeneratorConfig(rows=3000, seed=8)
    catalogue = set(product_texts(product_catalogue(config).to_dict("records")))
    df = generate(config)
    assert {transaction_text(r) for r in df.to_dict("records")} <= catalogue
