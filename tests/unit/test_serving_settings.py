"""The environment declarations (``recsys.platform.settings``, ``recsys.serving.settings``): a bad value stops start-up
with a message naming the variable, aliases, the derived defaults, and the tables in README.md / docs/image.md are
the ones generated from the declarations."""

import dataclasses
import importlib.util
import logging

import pytest

from helpers.opt_ml import ROOT
from recsys.platform import settings as platform_settings
from recsys.platform.errors import UserError
from recsys.platform.logs import configure_logging
from recsys.platform.paths import SageMakerPaths
from recsys.platform.settings import COMMON, TRAINING, EnvVar, TrainingSettings
from recsys.serving import serve
from recsys.serving.settings import SERVING, Settings

ALL_NAMES = [name for var in COMMON + TRAINING + SERVING for name in var.names]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ALL_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "name, value, wanted",
    [
        ("MODEL_SERVER_WORKERS", "abc", "an integer between 1 and 1024"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0", "an integer between 1 and 1024"),
        ("SAGEMAKER_BIND_TO_PORT", "70000", "an integer between 1 and 65535"),
        ("MODEL_SERVER_TIMEOUT", "-5", "an integer ≥ 1"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "lots", "an integer between 0 and 100000"),
        ("SAGEMAKER_BATCH", "perhaps", "true or false"),
        ("RECSYS_WORKER_CLASS", "eventlet", "one of gthread, sync"),
        ("RECSYS_NGINX_WORKERS", "0", "a positive integer or auto"),
        ("RECSYS_SCORE_CACHE", "maybe", "one of auto, on, off"),
        ("RECSYS_DEVICE", "tpu", "auto, cpu, cuda or cuda:N"),
        ("RECSYS_MAX_K", "0", "an integer ≥ 1"),
        ("RECSYS_MAX_USERS_PER_REQUEST", "many", "an integer ≥ 1"),
        ("RECSYS_LOG_LEVEL", "loud", "a level name"),
        ("SAGEMAKER_CONTAINER_LOG_LEVEL", "loud", "a level name"),
    ],
)
def test_a_bad_value_stops_serve_at_start_up_naming_the_variable(monkeypatch, caplog, name, value, wanted):
    monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=f"environment variable {name} must be {wanted}.*got"):
        Settings.from_env()
    monkeypatch.setattr(serve, "configure_logging", lambda: None)  # keep pytest's log capture
    with caplog.at_level(logging.ERROR, logger="recsys.serve"):
        assert serve.main() == 2
    assert f"cannot serve: environment variable {name} must be {wanted}" in caplog.text


def test_default_k_above_max_k_is_refused(monkeypatch):
    monkeypatch.setenv("RECSYS_DEFAULT_K", "50")
    monkeypatch.setenv("RECSYS_MAX_K", "20")
    with pytest.raises(UserError, match="RECSYS_DEFAULT_K must be ≤ RECSYS_MAX_K"):
        Settings.from_env()


def test_values_aliases_and_derived_defaults(monkeypatch, tmp_path):
    s = Settings.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    assert s.model_dir == tmp_path / "model" and s.device_or_none is None and s.limits.max_k == 1000
    assert (s.worker_class, s.threads, s.nginx_workers, s.score_cache) == ("gthread", 2, "1", "auto")
    assert s.log_level == "info" and s.gunicorn_log_level == "info"
    env = {
        "MODEL_SERVER_WORKERS": " ",  # blank = unset: the alias is used
        "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "90.0",
        "RECSYS_WORKER_CLASS": "SYNC",
        "RECSYS_NGINX_WORKERS": "auto",
        "RECSYS_DEVICE": "CUDA:1",
        "SAGEMAKER_BATCH": "True",
        "RECSYS_MODEL_DIR": str(tmp_path / "m"),
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "10",
        "RECSYS_MAX_FILTER_ITEMS": "7",
    }
    s = Settings.from_env(env)
    assert (s.workers, s.timeout, s.worker_class) == (3, 90, "sync")
    assert s.nginx_workers == "auto" and s.device_or_none == "cuda:1"
    assert s.batch and s.body_limit_mb == 100 and s.model_dir == tmp_path / "m" and s.limits.max_filter_items == 7
    assert s.gunicorn_log_level == "debug"
    first_wins = Settings.from_env({"RECSYS_LOG_LEVEL": "warn", "SAGEMAKER_CONTAINER_LOG_LEVEL": "10"})
    assert first_wins.gunicorn_log_level == "warning"


def test_every_declaration_is_a_field_and_every_field_declared():
    assert [f.name for f in dataclasses.fields(Settings)] == [var.attr for var in COMMON + SERVING]
    assert [f.name for f in dataclasses.fields(TrainingSettings)] == [var.attr for var in COMMON + TRAINING]
    assert len(set(ALL_NAMES)) == len(ALL_NAMES)
    for var in COMMON + TRAINING + SERVING:
        assert var.help and var.name.isupper(), var


def test_training_settings(monkeypatch, tmp_path):
    from recsys.models.als import spark
    from recsys.platform.cluster import coordination_port
    from recsys.platform.resources import ResourceConfig

    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    assert SageMakerPaths.from_env().checkpoint_dir == tmp_path / "checkpoints"
    monkeypatch.setenv("RECSYS_CHECKPOINT_DIR", str(tmp_path / "ck"))
    assert SageMakerPaths.from_env().checkpoint_dir == tmp_path / "ck"
    assert coordination_port() == 7079
    monkeypatch.setenv("RECSYS_COORDINATION_PORT", "7100")
    monkeypatch.setenv("RECSYS_SPARK_DRIVER_MEMORY", "8G")
    monkeypatch.setenv("SM_CURRENT_INSTANCE_TYPE", "ml.m5.xlarge")
    assert coordination_port() == 7100 and spark.settings_for().driver_memory == "8g"
    assert ResourceConfig.read(SageMakerPaths.from_env()).instance_type == "ml.m5.xlarge"
    monkeypatch.setenv("RECSYS_SPARK_DRIVER_MEMORY", "lots")
    with pytest.raises(UserError, match="RECSYS_SPARK_DRIVER_MEMORY must be a JVM memory size"):
        spark.settings_for()
    monkeypatch.delenv("RECSYS_SPARK_DRIVER_MEMORY")
    monkeypatch.setenv("RECSYS_COORDINATION_PORT", "0")
    with pytest.raises(UserError, match="RECSYS_COORDINATION_PORT must be an integer between 1 and 65535"):
        ResourceConfig.read(SageMakerPaths.from_env())  # train's first read inside its error handling


def test_a_bad_log_level_is_reported_and_logging_still_works(monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_LOG_LEVEL", "chatty")
    configure_logging()  # must not raise: train configures logging before it can report errors
    assert logging.getLogger().level == logging.INFO
    assert "RECSYS_LOG_LEVEL must be a level name" in capsys.readouterr().err
    monkeypatch.setenv("RECSYS_LOG_LEVEL", "debug")
    configure_logging()
    assert logging.getLogger().level == logging.DEBUG
    monkeypatch.delenv("RECSYS_LOG_LEVEL")
    configure_logging()


def test_env_var_parsing_rules():
    port = EnvVar("port", "P", int, 1, "a port", low=1, high=9)
    assert port.read({}) == 1 and port.read({"P": "3.0"}) == 3
    assert EnvVar("flag", "F", bool, False, "x").read({"F": "On"}) is True
    assert EnvVar("n", "N", int, lambda: 42, "computed").read({}) == 42
    with pytest.raises(UserError, match="environment variable P must be an integer between 1 and 9, got 10"):
        port.read({"P": "10"})


def _render_readme():
    spec = importlib.util.spec_from_file_location("render_readme", ROOT / "scripts" / "render_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_env_tables_in_the_docs_are_generated_from_the_declarations():
    script = _render_readme()
    for relative, by_name in script.tables().items():
        text = (ROOT / relative).read_text()
        for name, table in by_name.items():
            if name.startswith("env-"):
                assert f"<!-- {name}:begin -->\n{table}\n<!-- {name}:end -->" in text, (
                    f"{relative}: table {name} is stale: run `python scripts/render_readme.py`"
                )
    assert script.main(["--check", "--only", "env-serving", "env-common", "env-training"]) == 0
    table = platform_settings.markdown_table(SERVING)
    assert all(f"`{var.name}`" in table for var in SERVING if not var.internal)
    assert "RECSYS_READY_DIR" not in table and "RECSYS_GUNICORN_SOCKET" not in table
