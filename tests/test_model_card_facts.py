"""Model card facts come from the model's own data, not from fixed text."""

import math

from mlops_assets.ml.model_card import fill_limitations, model_facts
from mlops_assets.use_cases import get_use_case


def test_limitations_carry_the_models_own_figures():
    metrics = {"roc_auc": 0.76, "buyers": 69.0, "customers": 1163.0}
    lineage = {"training_rows": 5822, "split_sizes": "3494/1165/1163"}
    facts = model_facts(metrics, lineage)
    assert facts["test_buyers"] == 69 and facts["test_customers"] == 1163 and facts["labelled_customers"] == 5822
    # Hanley & McNeil: about 0.03 for 69 buyers at AUC 0.76.
    assert 0.025 < facts["roc_auc_standard_error"] < 0.035
    texts = fill_limitations(get_use_case("caravan").known_limitations, facts)
    joined = " ".join(texts)
    assert "69 buyers of 1163" in joined and "5822 labelled customers" in joined and "{" not in joined
    # Another model, other figures: nothing fixed stays behind.
    other = " ".join(
        fill_limitations(
            get_use_case("caravan").known_limitations,
            model_facts({"roc_auc": 0.7, "buyers": 200.0, "customers": 4000.0}, {"training_rows": 20000}),
        )
    )
    assert "200 buyers of 4000" in other and "69" not in other


def test_standard_error_needs_both_classes():
    assert math.isnan(model_facts({"roc_auc": 0.7, "buyers": 0.0, "customers": 10.0}, {})["roc_auc_standard_error"])


def test_fairness_groups_carry_their_code_labels(completed_pipeline):
    import duckdb

    from mlops_assets.lifecycle import group_label, model_card
    from mlops_assets.registry import current_champion

    caravan = get_use_case("caravan")
    labels = caravan.value_labels("avg_age_class")
    assert labels["3"] == "40-50 years" and group_label(3.0, labels) == "3 (40-50 years)"
    assert group_label("18-29", {}) == "18-29"  # values that read on their own stay as they are
    with duckdb.connect(str(completed_pipeline.settings.duckdb_path), read_only=True) as connection:
        card = model_card(connection, caravan, current_champion(connection, "caravan"))
    fairness = card.split("## Fairness", 1)[1]
    assert "(40-50 years)" in fairness and "avg_age_class=3 (40-50 years)" in card
