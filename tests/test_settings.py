"""Settings: YAML + environment, one-line errors naming the key."""

from __future__ import annotations

import pytest

from pipeline.settings import ConfigError, load_settings


def write(tmp_path, text: str):
    path = tmp_path / "newswatch.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(monkeypatch):
    monkeypatch.delenv("NEWSWATCH_CONFIG", raising=False)
    settings = load_settings()
    assert settings.store.url == "sqlite:///data/newswatch.db"
    assert settings.fetch.max_bytes == 10_000_000
    assert settings.fetch.allow_private_networks is False
    assert settings.fetch.revalidate_every == 50
    assert settings.fetch.dead_after_failures == 10
    assert "newswatch" in settings.fetch.user_agent


def test_yaml_values_and_env_override(tmp_path, monkeypatch):
    path = write(tmp_path, """
feeds:
  - {url: "https://example.org/feed.xml", name: Example}
  - {url: "https://example.org/off.xml", enabled: false}
fetch: {timeout_s: 7, per_host_concurrency: 3}
""")
    monkeypatch.setenv("NEWSWATCH_FETCH__TIMEOUT_S", "11")
    monkeypatch.setenv("NEWSWATCH_STORE__URL", "sqlite:///tmp/x.db")
    settings = load_settings(path)
    assert settings.fetch.timeout_s == 11  # environment beats the file
    assert settings.fetch.per_host_concurrency == 3
    assert settings.store.url == "sqlite:///tmp/x.db"
    assert [f.url for f in settings.enabled_feeds()] == ["https://example.org/feed.xml"]


def test_config_path_from_environment(tmp_path, monkeypatch):
    path = write(tmp_path, "fetch: {max_redirects: 2}\n")
    monkeypatch.setenv("NEWSWATCH_CONFIG", str(path))
    assert load_settings().fetch.max_redirects == 2


def test_separate_feeds_file(tmp_path):
    (tmp_path / "feeds.yaml").write_text(
        "feeds:\n  - {url: 'https://a.example/rss'}\n", encoding="utf-8")
    settings = load_settings(write(tmp_path, "feeds: feeds.yaml\n"))
    assert settings.feeds[0].url == "https://a.example/rss"


@pytest.mark.parametrize(("text", "expected"), [
    ("fetch: {timeout_s: -1}\n", "fetch.timeout_s: Input should be greater than 0"),
    ("fetch: {timeot_s: 3}\n", "fetch.timeot_s: unknown key"),
    ("feeds:\n  - {url: 'ftp://x/feed'}\n", "feeds.0.url"),
    ("store: {url: 'mysql://x'}\n", "store.url"),
    ("fetch: [1, 2\n", "invalid YAML"),
    ("- just\n- a list\n", "top level must be a mapping"),
])
def test_invalid_config_is_one_line_naming_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_shipped_configs_are_valid():
    default = load_settings("config/newswatch.yaml")
    assert len(default.feeds) >= 8
    assert all(f.url.startswith("https://") for f in default.feeds)
    assert any(w.name == "taiwan" for w in default.watches)
    demo = load_settings("examples/demo.yaml")
    assert demo.fetch.allow_private_networks is True
    assert demo.store.url.startswith("sqlite:///data/demo/")


def test_config_path_precedence_is_one_order(tmp_path, monkeypatch):
    """explicit > $NEWSWATCH_CONFIG > Airflow Variable > default file > defaults."""
    from pipeline.settings import resolve_config_path

    default = write(tmp_path, "store: {url: 'sqlite:///default.db'}\n")
    monkeypatch.delenv("NEWSWATCH_CONFIG", raising=False)
    asked: list[bool] = []

    def variable() -> str:
        asked.append(True)
        return "/from/variable.yaml"

    assert resolve_config_path(default_file=tmp_path / "absent.yaml") is None
    assert resolve_config_path(default_file=default) == str(default)
    assert resolve_config_path(airflow_variable=variable, default_file=default) == (
        "/from/variable.yaml")
    monkeypatch.setenv("NEWSWATCH_CONFIG", "/from/env.yaml")
    asked.clear()
    assert resolve_config_path(airflow_variable=variable) == "/from/env.yaml"
    assert not asked  # the variable is read only when it decides
    assert resolve_config_path("/explicit.yaml", airflow_variable=variable) == "/explicit.yaml"


def test_connection_values_sit_between_the_file_and_the_environment(tmp_path, monkeypatch):
    import os

    from pipeline.settings import resolve_settings

    path = write(tmp_path, "search: {url: 'http://file:9200', username: filer, index_prefix: nw}\n")
    monkeypatch.setenv("NEWSWATCH_SEARCH__USERNAME", "operator")
    before = dict(os.environ)
    settings = resolve_settings(path, connection={"search": {
        "url": "https://conn:9243", "username": "conn", "password": "pw", "api_key": None}})
    assert dict(os.environ) == before  # no side effects
    search = settings.search
    assert (search.url, search.username, search.password) == (
        "https://conn:9243", "operator", "pw")  # connection over file, environment over both
    assert search.index_prefix == "nw"  # the file's other keys of that section stay
