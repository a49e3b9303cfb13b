import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.opt_ml import ROOT
from recsys.models import registry
from recsys.platform.errors import UserError
from recsys.training import hyperparameters as hpmod
from recsys.training.hyperparameters import PARAMS, parse


def test_defaults_are_valid_and_complete():
    hp = parse({})
    assert set(hp) == {p.name for p in PARAMS}
    assert hp.algorithm == "ncf" and hp.top_k == 10


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"implicit_prefs": "True"}, True),  # SDK v2 Estimator: str(True)
        ({"implicit_prefs": "true"}, True),  # SDK v3: json.dumps(True)
        ({"implicit_prefs": "false"}, False),
        ({"implicit_prefs": "0"}, False),
        ({"implicit_prefs": '"true"'}, True),  # v2 framework estimators: json.dumps of a string
    ],
)
def test_booleans_from_every_client(raw, expected):
    assert parse(raw).implicit_prefs is expected


def test_strings_numbers_and_quoting():
    hp = parse({"algorithm": '"als"', "rank": "16", "reg_param": "0.05", "epochs": "3.0", "model_type": "GMF"})
    assert (hp.algorithm, hp.rank, hp.reg_param, hp.epochs, hp.model_type) == ("als", 16, 0.05, 3, "gmf")
    assert isinstance(hp.rank, int) and isinstance(hp.reg_param, float)


def test_columns_by_name_or_index():
    assert parse({"user_col": "CustomerID", "item_col": "StockCode"}).user_col == "CustomerID"
    hp = parse({"user_col": "0", "item_col": "1", "rating_col": 2})
    assert (hp.user_col, hp.item_col, hp.rating_col) == (0, 1, 2)


def test_platform_keys_are_ignored():
    hp = parse({"sagemaker_program": "x.py", "sagemaker_region": '"us-east-1"', "_tuning_objective_metric": "HR"})
    assert "sagemaker_program" not in hp


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"lr": "-1"}, "`lr` must be a number > 0"),
        ({"factor_num": "0"}, "`factor_num` must be an integer ≥ 1"),
        ({"factor_num": "abc"}, "got 'abc'"),
        ({"epochs": "2.5"}, "`epochs` must be an integer"),
        ({"dropout": "1"}, "`dropout` must be a number ≥ 0, < 1"),
        ({"algorithm": "svd"}, f"`algorithm` must be one of {', '.join(registry.names())}"),
        ({"implicit_prefs": "maybe"}, "true or false"),
        ({"lr": "nan"}, "`lr` must be a number"),
        ({"learning_rate": "0.1"}, "unknown hyperparameter(s) learning_rate"),
        ({"pretrain": "true", "model_type": "mlp"}, "pretrain"),
        ({"user_col": "user", "item_col": "user"}, "same column"),
        ({"user_col": "user", "item_col": "1"}, "not a mix"),
    ],
)
def test_bad_values_say_what_to_change(raw, fragment):
    with pytest.raises(UserError) as err:
        parse(raw)
    assert fragment in str(err.value)


def test_unknown_name_lists_valid_names_and_suggests():
    with pytest.raises(UserError) as err:
        parse({"factor_nums": "8"})
    assert "did you mean factor_num" in str(err.value) and "rank" in str(err.value)


@given(st.integers(min_value=1, max_value=4096), st.booleans())
def test_integers_round_trip_any_encoding(value, as_json):
    raw = json.dumps(value) if as_json else str(value)
    assert parse({"factor_num": raw}).factor_num == value


@given(st.floats(min_value=1e-6, max_value=10, allow_nan=False))
def test_floats_round_trip(value):
    assert parse({"lr": repr(value)}).lr == pytest.approx(value)


@given(st.integers(max_value=0))
def test_non_positive_factor_num_always_rejected(value):
    with pytest.raises(UserError):
        parse({"factor_num": str(value)})


def test_readme_table_is_generated_from_the_declaration():
    table = hpmod.markdown_table()
    for p in PARAMS:
        assert f"`{p.name}`" in table
    readme = ROOT / "README.md"
    if readme.exists():
        assert table in readme.read_text(), (
            "README hyperparameter table is stale: run `python scripts/render_readme.py`"
        )


def test_table_column_names_the_owner_and_for_algorithm_keeps_common_plus_own():
    rows = {line.split(" | ")[0][3:-1]: line.split(" | ")[1] for line in hpmod.markdown_table().splitlines()[2:]}
    common = {name for name, owner in rows.items() if owner == "all"}
    assert {"algorithm", "preset", "user_col", "top_k", "num_eval_negatives", "seed", "refit"} <= common
    for algorithm in registry.algorithms().values():
        own = {p.name for p in algorithm.params}
        assert own and {name for name, owner in rows.items() if owner == algorithm.name} == own
        assert set(parse({"algorithm": algorithm.name}).for_algorithm()) == common | own


def test_metric_definitions_match_the_lotteon_regexes():
    assert [m["Regex"] for m in hpmod.METRIC_DEFINITIONS][:3] == ["HR=(.*?);", "NDCG=(.*?);", "Loss=(.*?);"]


def test_metric_regexes_pick_each_role_from_train_log_lines():
    """The lines `train` prints, read the way SageMaker reads them (each regex's first match per line): the LotteON
    names follow validation, and no regex but test:* ever sees a test value."""
    import re

    from recsys.training.main import format_metrics, role_names

    epoch = {"Loss": 0.31, "HR": 0.61, "NDCG": 0.36}
    selected = {"HR": 0.65, "NDCG": 0.38, "Loss": 0.29, "best_epoch": 4, "full_recall@10": 0.1, "full_ndcg@10": 0.05}
    test = {"HR": 0.12, "NDCG": 0.07, "full_recall@10": 0.02, "full_ndcg@10": 0.01}
    lines = [
        format_metrics({**epoch, **role_names("validation", epoch, 10)}, epoch=1),
        format_metrics({**selected, **role_names("validation", selected, 10)}, final="selected"),
        format_metrics(role_names("test", test, 10)),
    ]
    seen: dict[str, list[float]] = {}
    for definition in hpmod.METRIC_DEFINITIONS:
        for line in lines:
            if match := re.search(definition["Regex"], line):
                seen.setdefault(definition["Name"], []).append(float(match.group(1)))
    assert seen == {
        "HR": [0.61, 0.65],
        "NDCG": [0.36, 0.38],
        "Loss": [0.31, 0.29],
        "validation:HR": [0.61, 0.65],
        "validation:NDCG": [0.36, 0.38],
        "test:HR": [0.12],
        "test:NDCG": [0.07],
    }
