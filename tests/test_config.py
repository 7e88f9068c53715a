from pathlib import Path

import pytest

from paywatch.config import Config, ConfigError, load_config, read_secret
from paywatch.config_docs import _rows, render

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current():
    assert (ROOT / "docs" / "configuration.md").read_text() == render(), "run `paywatch config-docs`"


def test_every_knob_is_described():
    undocumented = [key for key, _, _, desc in _rows(Config, "") if not desc]
    assert undocumented == []


def test_unknown_keys_and_bad_values_are_clear_errors(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  bootstrap_server: x\n")
    with pytest.raises(ConfigError, match="bootstrap_server"):
        load_config(cfg)
    cfg.write_text("backend: postgres\n")
    with pytest.raises(ConfigError, match="backend"):
        load_config(cfg)


def test_secrets_come_from_env_then_file(tmp_path, monkeypatch):
    secret = tmp_path / "key"
    secret.write_text("from-file\n")
    monkeypatch.delenv("PW_TEST_KEY", raising=False)
    assert read_secret("PW_TEST_KEY", secret) == "from-file"
    monkeypatch.setenv("PW_TEST_KEY", "from-env")
    assert read_secret("PW_TEST_KEY", secret) == "from-env"
