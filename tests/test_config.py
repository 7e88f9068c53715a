from pathlib import Path

import pytest

from paywatch.app.config import Config, load_config
from paywatch.app.config_docs import NAME, _rows, render
from paywatch.collectors.sdk_settings import SdkConfig
from paywatch.secrets import read_secret
from paywatch.settings import ConfigError, load_file

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current():
    assert (ROOT / "docs" / "configuration.md").read_text() == render(), "run `paywatch config-docs`"


def _schema_keys(schema: dict, node: dict, prefix: str) -> set[str]:
    """Every settings key under `node`, found by walking pydantic's JSON schema of `Config` (not the
    generator's own walk over the models): nested sections, optional sections, dict values, list items."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    if "properties" in node:
        keys = set()
        for name, sub in node["properties"].items():
            key = f"{prefix}.{name}" if prefix else name
            keys.add(key)
            keys |= _schema_keys(schema, sub, key)
        return keys
    keys = set()
    for alternative in node.get("anyOf", []):
        keys |= _schema_keys(schema, alternative, prefix)
    if isinstance(node.get("additionalProperties"), dict):
        keys |= _schema_keys(schema, node["additionalProperties"], f"{prefix}.{NAME}")
    if isinstance(node.get("items"), dict):
        keys |= _schema_keys(schema, node["items"], f"{prefix}[]")
    return keys


def test_every_settings_field_is_in_the_reference():
    """A knob anywhere under `Config` (also inside `dict[str, Model]`, optional sections and lists)
    that the generated page leaves out fails here."""
    schema = Config.model_json_schema()
    page = render()
    documented = {line.split("`")[1] for line in page.splitlines() if line.startswith("| `")}
    documented |= {line.split("`")[1].rstrip(":") for line in page.splitlines() if line.startswith("## `")}
    # a section is documented by its rows; a leaf key must have its own row
    sections = {key for key in _schema_keys(schema, schema, "") if any(k.startswith(key + ".") for k in documented)}
    missing = sorted(_schema_keys(schema, schema, "") - documented - sections)
    assert missing == []
    assert f"compensation.channels.{NAME}.stripe.secret_key_env" in documented
    assert f"detectors.channels.{NAME}.paid_grace_s" in documented


def test_every_knob_is_described():
    undocumented = [key for key, _, _, desc in _rows(Config, "") if not desc]
    assert undocumented == []


def test_the_old_kibana_url_keys_name_the_new_one(tmp_path):
    cfg = tmp_path / "c.yaml"
    for section in ("alerts", "dashboards"):
        cfg.write_text(f"{section}:\n  kibana_url: http://kibana:5601\n")
        with pytest.raises(ConfigError, match=rf"{section}\.kibana_url is now kibana\.url"):
            load_config(cfg)
    cfg.write_text("kibana:\n  url: http://kibana:5601\n")
    assert load_config(cfg).kibana.url == "http://kibana:5601"


def test_every_consumer_group_is_called_consumer_group(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("collector:\n  group_id: old\n")
    with pytest.raises(ConfigError, match=r"collector\.group_id is now collector\.consumer_group"):
        load_config(cfg)
    cfg.write_text(
        "collector:\n  consumer_group: c\nalerts:\n  consumer_group: a\ncompensation:\n  consumer_group: p\n"
    )
    config = load_config(cfg)
    assert (config.collector.consumer_group, config.alerts.consumer_group, config.compensation.consumer_group) == (
        "c",
        "a",
        "p",
    )


def test_the_sdk_reads_its_own_sections_and_ignores_the_rest(tmp_path):
    """A payment service's SDK validates only what it reads; the paywatch processes validate all."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backend: kafka\nsdk:\n  send_timeout_s: 2\ndetectors:\n  bogus: 1\n")
    sdk = load_file(SdkConfig, cfg)
    assert sdk.backend == "kafka" and sdk.sdk.send_timeout_s == 2
    with pytest.raises(ConfigError, match=r"detectors\.bogus"):
        load_config(cfg)
    cfg.write_text("sdk:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match=r"sdk\.bogus"):
        load_file(SdkConfig, cfg)


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
