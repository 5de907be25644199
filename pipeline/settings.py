"""Every newswatch setting, with its default and validation, in one place.

Settings come from a YAML file and any key can be overridden from the environment as
``NEWSWATCH_<SECTION>__<KEY>`` (lists/dicts as JSON). :func:`resolve_settings` is the one
place that decides which file (:func:`resolve_config_path`) and how the layers stack; the
CLI, the orchestration functions, the DAGs and the Airflow plugin all go through it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

DEFAULT_CONFIG_ENV = "NEWSWATCH_CONFIG"
AIRFLOW_CONFIG_VARIABLE = "newswatch_config"  # the Airflow Variable naming the config file
DEFAULT_USER_AGENT = "newswatch/0.1 (+https://github.com/newswatch/newswatch; news monitoring)"


class ConfigError(Exception):
    """A configuration problem, reported to users as one line (exit code 2)."""


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FeedConfig(Section):
    url: str = Field(description="the feed's address (http or https)")
    name: str | None = Field(None, description="shown in tables and reports (default: the url)")
    source: str | None = Field(None, description="outlet shown for its articles (default: "
                               "name); feeds of one outlet share it")
    enabled: bool = Field(True, description="false keeps the feed listed but never fetched")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"feed url must start with http:// or https:// (got {value!r})")
        return value


class StoreSettings(Section):
    url: str = Field("sqlite:///data/newswatch.db", description="SQLAlchemy URL of the records: "
                     "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:5432/DB")

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql")):
            raise ValueError("must start with sqlite:/// or postgresql")
        return value


class FetchSettings(Section):
    timeout_s: float = Field(20.0, gt=0, description="connect and read timeout")
    deadline_s: float = Field(60.0, gt=0, description="total time allowed for one request")
    max_bytes: int = Field(10_000_000, gt=0, description="body cap after decompression")
    user_agent: str = Field(DEFAULT_USER_AGENT, description="sent with every request")
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight overall")
    per_host_concurrency: int = Field(2, ge=1, le=32, description="requests in flight per host "
                                      "(feeds and pages share it)")
    max_redirects: int = Field(5, ge=0, le=20, description="each hop is re-checked against the "
                               "address rules")
    allow_private_networks: bool = Field(False, description="allow loopback, RFC 1918, ULA and "
                                         "CGNAT addresses (the demo does); link-local, "
                                         "multicast, reserved and cloud-metadata addresses "
                                         "stay refused")
    revalidate_every: int = Field(
        50, ge=0, description="1 in N fetches skips ETag/Last-Modified (0 = never)"
    )
    dead_after_failures: int = Field(10, ge=1, description="consecutive failures before a feed "
                                     "is marked dead (`newswatch feeds enable` revives it)")
    backoff_base_s: float = Field(300.0, ge=0, description="first retry delay after a failure")
    backoff_max_s: float = Field(86_400.0, ge=0, description="longest retry delay (exponential "
                                 "backoff with jitter)")
    max_retry_after_s: float = Field(86_400.0, ge=0, description="cap on a server's Retry-After")
    min_interval_s: float = Field(0.0, ge=0, description="never fetch one feed more often")
    stage_budget_s: float | None = Field(
        600.0, gt=0, description="time budget of the fetch stage in one run; feeds not "
        "started by then stay due for the next run (null = no budget)")
    fast_parse_min_bytes: int | None = Field(
        1_000_000, ge=0, description="feeds at least this large that are well-formed RSS 2.0 "
        "or Atom are read by a streaming parser (lxml) instead of feedparser, several times "
        "faster on tens of thousands of entries; others still go to feedparser (0 = always "
        "try it, null = never)")
    host_budget_s: float | None = Field(
        180.0, gt=0, description="request time one host may use per stage and run (feeds "
        "and pages counted separately); its remaining work waits for the next run, so one "
        "slow host cannot hold a run (null = no budget)")


class ExtractionSettings(Section):
    engine: Literal["trafilatura", "newspaper"] = Field(
        "trafilatura", description="text extractor: trafilatura or newspaper (newspaper4k); the "
        "other one is the fallback for short results (docs/decisions.md)")
    max_articles_per_run: int = Field(500, ge=0, description="article pages downloaded per "
                                      "run at most; the rest wait for the next run (articles "
                                      "that take their feed text are not capped)")
    min_text_chars: int = Field(200, ge=0, description="shorter page text counts as empty")
    max_attempts: int = Field(3, ge=1, description="runs that try to download and extract an "
                              "article page that failed before; then the article keeps its "
                              "feed text")
    fetch_pages: bool = Field(True, description="false keeps only the feed's own text (no page "
                              "downloads)")
    stage_budget_s: float | None = Field(
        900.0, gt=0, description="time budget of the extraction stage in one run; articles "
        "not started by then stay pending for the next run (null = no budget)")


class EmbeddingSettings(Section):
    model: str = Field("default", description="'default' = packaged all-MiniLM-L6-v2, or any "
                       "sentence-transformers name or local path")
    backend: Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-bf16"] = Field(
        "openvino-bf16", description="inference engine for the model: torch "
        "(sentence-transformers fp32), onnx (ONNX Runtime, fused fp32), onnx-int8 (per-channel "
        "int8, cosine ~0.99 to torch), openvino (fp32) or openvino-bf16 (bfloat16 where the "
        "CPU has it natively, ~1.7x faster, cosine 0.99999 to torch; fp32 elsewhere); all but "
        "torch are exported once from the local model into <data_dir>/models. Changing it "
        "re-embeds stored articles")
    batch_size: int = Field(4, ge=1, description="texts per encoder call: on the CPU 4 costs "
                            "~2 % more CPU per text than 8 and 32 and peaks ~45 MB lower than 8 "
                            "(~155 MB lower than 32); raise it on a GPU")
    device: str = Field("cpu", description="torch device (cpu, cuda); the other backends run "
                        "on the CPU")
    threads: int = Field(0, ge=0, description="CPU threads for onnx/openvino inference "
                         "(0 = the library's default, all cores)")

    model_cache: str = Field("", description="folder for the exported onnx/openvino model "
                             "files and the language identifier's unpacked model (empty = "
                             "<data_dir>/models); deployments may share one")

    def cache_dir(self, data_dir: str) -> str:
        """Where exported models are kept: beside the other data of this deployment."""
        return self.model_cache or str(Path(data_dir) / "models")


class RunSettings(Section):
    chunk_size: int = Field(1000, ge=1, description="articles per chunk of a run: each chunk "
                            "is extracted, embedded, assigned to stories, indexed, scored and "
                            "committed before the next, so a stopped run keeps every finished "
                            "chunk and memory does not grow with a backlog")
    budget_s: float = Field(3_000.0, gt=0, description="a run starts no new chunk after this "
                            "long (the chunk in hand finishes); the rest of the backlog is left "
                            "pending for the next run and counted as run/deferred-run-budget, "
                            "so an hourly run does not overlap the next")
    stale_after_s: float = Field(21_600.0, gt=0, description="a run still marked running "
                                 "whose last progress is older than this is marked abandoned "
                                 "by the next run (a run from this host whose process is gone "
                                 "is marked at once)")


class SearchSettings(Section):
    url: str = Field("", description="empty = SQLite FTS5 beside the records; http(s):// = "
                     "Elasticsearch")

    @field_validator("url")
    @classmethod
    def _search_scheme(cls, value: str) -> str:
        """Checked at load time: otherwise a typo surfaces as a traceback in the index stage."""
        value = value.strip()
        if value and not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"must be empty (SQLite FTS5) or an http:// or https:// "
                             f"Elasticsearch URL (got {value.split('://')[0]}://…)"
                             if "://" in value else
                             "must be empty (SQLite FTS5) or an http:// or https:// "
                             "Elasticsearch URL")
        return value
    sqlite_path: str | None = Field(None, description="FTS5 file when the records are not SQLite")
    index_prefix: str = Field("newswatch", description="Elasticsearch aliases are "
                              "<prefix>-articles and <prefix>-stories")
    vectors: bool = Field(True, description="store embeddings in the search index for the "
                          "semantic part of search")
    api_key: str | None = Field(None, description="Elasticsearch API key (preferred; set it in "
                                "the environment, not the YAML)")
    username: str | None = Field(None, description="Elasticsearch basic-auth user")
    password: str | None = Field(None, description="Elasticsearch basic-auth password (from the "
                                 "environment)")
    verify_certs: bool = Field(True, description="verify the cluster's TLS certificate")
    ca_certs: str | None = Field(None, description="PEM file of a private CA for the cluster")
    similarity_floor: float = Field(0.55, ge=-1, le=1, description="default (hybrid) mode: the "
                                    "query-to-article embedding cosine an article needs to be "
                                    "added without containing every query word (it must still "
                                    "contain the quoted phrases, none of the excluded terms, "
                                    "and pass the filters)")
    semantic_weight: float = Field(0.5, ge=0, le=1, description="default (hybrid) mode: share "
                                   "of the embedding similarity in the combined score (the "
                                   "rest is BM25; both normalised onto 0..1 first)")
    elasticsearch_conn_id: str | None = Field(None, description="Airflow connection whose "
                                              "host, login/password or api_key the DAGs use "
                                              "for url and credentials")


class StoriesSettings(Section):
    """Story assignment. Defaults are tuned on ECB+ / SemEval (docs/decisions.md)."""

    window_days: float = Field(3.0, gt=0, description="compare with stories active this close")
    threshold: float = Field(0.30, ge=-1, le=1, description="min score to join a story (for a "
                             "full text the mean over the story's latest members of the mixed "
                             "similarity below; for a headline its score against their "
                             "centroid)")
    term_weight: float = Field(0.2, ge=0, le=1, description="share of the score from rare "
                               "shared words of title + lead (idf-weighted cosine)")
    name_weight: float = Field(0.4, ge=0, le=1, description="share of the score from shared "
                               "names and numbers (capitalised words, figures); the rest is "
                               "the embedding cosine")
    short_text_terms: int = Field(20, ge=0, description="a text with fewer words than this "
                                  "(title + lead, stop words dropped; a headline has 5-10) is "
                                  "short: the word and name signals keep only that share of "
                                  "their weight against it, the rest goes to the embedding, and "
                                  "it is compared with a story's centroid rather than each "
                                  "member (0 = every text is scored as a full text)")
    embedding_scale: float = Field(0.55, ge=0, le=2, description="the weight a short text's "
                                   "unused word and name share adds to the embedding cosine, "
                                   "times this factor (puts a cosine on the mixed score's "
                                   "scale: the mixed threshold over the best embedding-only "
                                   "threshold on ECB+)")
    time_weight: float = Field(0.075, ge=0, le=1, description="publication time as evidence "
                               "where a text is too short to tell events apart: added to a "
                               "dated headline's score (fewer than 10 terms) against a headline "
                               "story reported in the same hour, falling to nothing at "
                               "time_scale_hours from the story's nearest report and to minus "
                               "this at twice that (0 = time only bounds the window)")
    time_scale_hours: float = Field(12.0, gt=0, description="the gap at which closeness in "
                                    "time stops favouring a join (in real feeds, where "
                                    "near-copies stop being likelier than same-topic pairs)")
    refine_passes: int = Field(2, ge=0, le=10, description="passes that let a run's articles "
                               "move to a better story of the same run (0 = purely online)")
    split_ratio: float = Field(0.8, ge=0, le=1, description="split a run's story in two when "
                               "the mean score between its two halves is below this share of "
                               "the looser half's own mean score (0 = never split)")
    merge_ratio: float = Field(0.8, ge=0, le=1, description="merge a story that gained "
                               "articles in the run with another story of its window when one "
                               "of them is mostly headlines and its articles score against the "
                               "other at least the join threshold and this share of the looser "
                               "story's own cohesion (halves of one event started apart, stored "
                               "or not; the newer folds into the older, whose id survives and "
                               "which the newer id then points to; 0 = never merge)")
    second_outlet: bool = Field(False, description="true: an article joins a story whose "
                                "articles all come from its own source only as a "
                                "near-duplicate of one of them, so an outlet's second article "
                                "on a subject waits for another outlet's report of its event "
                                "(a headline alone is exempt). Off by default: with one feed, "
                                "or one outlet's follow-ups, it splits an event into stories "
                                "that each alert")
    duplicate_threshold: float = Field(0.92, ge=-1, le=1, description="min embedding cosine "
                                       "to a member for a near-duplicate (wire copy)")
    duplicate_text_overlap: float = Field(0.5, ge=0, le=1, description="min share of word "
                                          "3-grams two texts have in common (Jaccard, first "
                                          "3,000 characters) for a near-duplicate: the "
                                          "embedding alone cannot tell a copy from a report "
                                          "on the same event")

    @model_validator(mode="after")
    def _weights_leave_room(self) -> StoriesSettings:
        if self.term_weight + self.name_weight > 1:
            raise ValueError("term_weight + name_weight must be at most 1")
        return self


class MultilingualSettings(Section):
    """Cross-lingual stories (pipeline/crosslingual.py, docs/decisions.md)."""

    enabled: bool = Field(True, description="group articles across languages: an article not "
                          "in English is compared with every story by the multilingual model "
                          "(USE v3, packaged), English with English by embedding.model; off = "
                          "every article is grouped by embedding.model alone")
    threshold: float = Field(0.40, ge=-1, le=1, description="multilingual cosine an article "
                             "needs with a story member in another language (a story's latest "
                             "members are averaged, each against its own threshold)")
    same_language_threshold: float = Field(0.55, ge=-1, le=1, description="the same for a "
                                           "member in the article's own language (Chinese "
                                           "with Chinese): one language sits closer")
    runner_up_margin: float = Field(0.03, ge=0, le=1, description="a cross-language join "
                                    "needs its best story ahead of the next best by this much "
                                    "(in a busy window an unrelated story always comes close)")
    batch_size: int = Field(64, ge=1, description="texts per multilingual encode call")


class WatchConfig(Section):
    """A topic to alert on (see docs: Watches and alerts)."""

    name: str = Field(description="the watch's name in alerts, the ledger and commands")
    description: str = Field("", description="what the watch is about, in plain sentences "
                             "(one per sub-topic); compared with each article's title and lead")
    keywords: list[str] = Field(default_factory=list, description="words and phrases (whole "
                                "words, any case); at least one must occur for an article to "
                                "score")
    exclude: list[str] = Field(default_factory=list, description="a term in an article's title "
                               "or lead sets its score to 0")
    evidence: dict[str, list[str]] = Field(
        default_factory=dict, description="the topic's own vocabulary in named groups (its "
        "people, parties, institutions, companies, places): each group with a term in a sentence "
        "that names a keyword adds to the score; these terms alone never make an article score")
    min_score: float = Field(0.5, ge=0, le=1, description="alert when the relevance score "
                             "(pipeline/relevance.py) reaches this; 0.5 = the threshold picked "
                             "with the shipped coefficients on the labelled Taiwan file "
                             "(docs/decisions.md, Watch relevance)")
    channels: list[str] = Field(default_factory=lambda: ["console"], description="names of "
                                "channels (the channels section) to alert")
    mode: Literal["immediate", "digest"] = Field("immediate", description="immediate: alert as "
                                                 "stories come; digest: one message a day")
    digest_at: str = Field("08:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM "
                           "in the watch's time zone when a digest is sent")
    timezone: str = Field("UTC", description="IANA zone for digest_at and quiet_hours")
    quiet_hours: str | None = Field(
        None, pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$",
        description="HH:MM-HH:MM in the watch's time zone: alerts wait until it ends")
    max_per_window: int = Field(10, ge=1, description="alerts per delivery window; more become "
                                "one \"+N more\" roll-up")
    enabled: bool = Field(True, description="false stops scoring and alerting for this watch")

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        """Checked at load time: a typo would otherwise surface only when a digest or quiet
        hours first need the zone, as a failed alert run."""
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as "
                             "Asia/Taipei or Europe/London)") from None
        return value


class ChannelConfig(Section):
    """Where alerts go: email, slack, console or a JSONL file."""

    type: Literal["email", "slack", "console", "file"] = Field(description="email (SMTP), slack "
                                                               "(incoming webhook), console "
                                                               "or file (JSONL outbox)")
    # email
    host: str | None = Field(None, description="email: SMTP server")
    port: int | None = Field(None, description="email: SMTP port (default 25, 465 with ssl, 587 "
                             "with starttls)")
    starttls: bool = Field(False, description="email: upgrade with STARTTLS")
    ssl: bool = Field(False, description="email: connect over TLS")
    username: str | None = Field(None, description="email: SMTP login")
    password: str | None = Field(None, description="email: SMTP password (prefer password_env)")
    password_env: str | None = Field(None, description="email: environment variable holding the "
                                     "password")
    sender: str | None = Field(None, description="email: From address")
    to: list[str] = Field(default_factory=list, description="email: recipients")
    smtp_conn_id: str | None = Field(None, description="email: Airflow connection with host, "
                                     "port, login and password")
    # slack
    webhook_url: str | None = Field(None, description="slack: incoming-webhook URL (prefer "
                                    "webhook_url_env)")
    webhook_url_env: str | None = Field(None, description="slack: environment variable holding "
                                        "the webhook URL")
    slack_conn_id: str | None = Field(None, description="slack: Airflow connection holding the "
                                      "webhook")
    # file
    path: str | None = Field(None, description="file: the JSONL outbox to append to")


class AlertSettings(Section):
    """When a story is news again, and how deliveries are retried and handed between runs."""

    update_min_new_sources: int = Field(
        3, ge=1, description="an update alert needs this many outlets not covered by the "
        "story's last alert")
    far_similarity: float = Field(
        0.5, ge=-1.0, le=1.0, description="a new article whose embedding cosine to the first "
        "report is below this is news (an update alert)")
    lookback_days: float | None = Field(
        None, gt=0, description="stories that gained articles this recently are considered "
        "(null = stories.window_days, at least 1)")
    continuation_days: float = Field(
        30.0, gt=0, description="a story re-identified under a new id looks this far back "
        "for its earlier alerts (so it is not alerted as new again)")
    send_due_digests: bool = Field(
        True, description="the alert stage also sends a digest whose time has come (the "
        "digest DAG and `newswatch digest` send them too)")
    score_batch: int = Field(256, ge=1, description="articles scored for relevance per call")
    smtp_timeout_s: float = Field(30.0, gt=0, description="seconds an SMTP server gets to "
                                  "accept a message")
    slack_max_wait_s: float = Field(
        30.0, ge=0, description="a Slack Retry-After up to this many seconds is waited out; a "
        "longer one is left to a later run")
    retry_base_s: float = Field(60.0, gt=0, description="first retry delay of a failed "
                                "delivery; doubles with each attempt")
    retry_max_s: float = Field(21600.0, gt=0, description="longest retry delay of a failed "
                               "delivery")
    max_attempts: int = Field(8, ge=1, description="delivery attempts before a delivery is "
                              "dead (until `newswatch alerts retry`)")
    stale_claim_s: float = Field(
        600.0, gt=0, description="a delivery left 'sending' this long by another worker is "
        "taken over and resent (one claimed by a process of this host that has died is "
        "taken over at once)")


class AirflowSettings(Section):
    """The Airflow DAGs' knobs (dags/): nothing else reads them."""

    schedule: str = Field(
        "@hourly", min_length=1, description="news_monitor's schedule (a cron expression or "
        "preset); read when the DAG file is parsed, from $NEWSWATCH_CONFIG and the environment "
        "(the Airflow Variable is not read at parse time)")
    fetch_batches: int = Field(8, ge=1, description="most mapped fetch tasks per run (feeds "
                               "are grouped by host into this many batches)")
    failure_channel: str | None = Field(
        None, description="channel (in channels) that receives pipeline-failure notices, "
        "separate from topic alerts (unset = logged only)")


class DemoSettings(Section):
    site_dir: str = Field("examples/sample_site", description="the bundled fictional sample "
                          "site served by `newswatch demo`")
    seeds_dir: str = Field("../shared/data/seeds", description="the user's two seed articles "
                           "(publishers' text, not in the repository); the sample site serves "
                           "their pages from here, or its fictional pair when they are absent")
    host: str = Field("127.0.0.1", description="address the sample site listens on")
    port: int = Field(8765, ge=0, le=65535, description="port of the sample site (0 = any free)")


class Settings(BaseSettings):
    """The whole configuration. Sections are added as the pipeline grows."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSWATCH_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    data_dir: str = Field("data", description="where local state lives (exported models, SQLite "
                          "search beside non-SQLite records)")
    feeds: list[FeedConfig] = Field(default_factory=list, description="the feeds to watch, or "
                                    "the path of a YAML file holding `feeds:`")
    store: StoreSettings = Field(default_factory=StoreSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    extraction: ExtractionSettings = Field(default_factory=ExtractionSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    stories: StoriesSettings = Field(default_factory=StoriesSettings)
    multilingual: MultilingualSettings = Field(default_factory=MultilingualSettings)
    watches: list[WatchConfig] = Field(default_factory=list)
    channels: dict[str, ChannelConfig] = Field(
        default_factory=lambda: {"console": ChannelConfig(type="console")})
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)

    # Set by the loader, not by users: where the YAML came from (relative paths resolve there).
    config_path: str | None = Field(None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML file (passed as init kwargs).
        return (env_settings, init_settings)

    def enabled_feeds(self) -> list[FeedConfig]:
        return [feed for feed in self.feeds if feed.enabled]


def _format_validation_error(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{source}: {key}: {message}{more}"


# libyaml's parser when PyYAML has it (8× faster on a 1,000-feed config), else pure Python.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """Safe YAML that refuses a key given twice in one mapping (``fetch:`` twice would
    otherwise silently keep only the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a directory, not a config file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})"
                          ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})"
                          ) from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{path}:{where} invalid YAML: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


_ENV_FIELD = re.compile(r'field "([^"]+)"')


def _environment_error(error: SettingsError) -> ConfigError:
    """One line naming the environment variable whose value could not be parsed."""
    match = _ENV_FIELD.search(str(error))
    field_name = match.group(1) if match else ""
    variable = f"NEWSWATCH_{field_name.upper()}" if field_name else "a NEWSWATCH_ variable"
    cause = error.__cause__
    detail = f" ({' '.join(str(cause).split())})" if cause else ""
    return ConfigError(f"environment: {variable}: not valid JSON{detail}")


def _resolve_feeds_reference(data: dict[str, Any], base: Path) -> None:
    """``feeds: other.yaml`` loads the feed list from a separate file."""
    feeds = data.get("feeds")
    if isinstance(feeds, str):
        feeds_path = (base / feeds) if not Path(feeds).is_absolute() else Path(feeds)
        loaded = _read_yaml(feeds_path) if feeds_path.suffix in {".yaml", ".yml"} else None
        if loaded is None:
            raise ConfigError(f"feeds: {feeds} must be a .yaml file")
        data["feeds"] = loaded.get("feeds", [])


def resolve_config_path(explicit: str | Path | None = None, *,
                        airflow_variable: str | Callable[[], str | None] | None = None,
                        default_file: str | Path | None = None) -> str | None:
    """Which config file to read; the first of these that is set wins:

    1. ``explicit``: ``--config PATH`` or a function's config argument;
    2. ``$NEWSWATCH_CONFIG``;
    3. ``airflow_variable``: the value of the Airflow Variable ``newswatch_config`` (the DAG
       and plugin layer pass it, or a function that reads it, called only when needed);
    4. ``default_file``, when that file exists (the CLI's ``config/newswatch.yaml``);
    5. none: the built-in defaults.

    Reads the environment and, at most, the variable; changes nothing.
    """
    if explicit:
        return str(explicit)
    if env := os.environ.get(DEFAULT_CONFIG_ENV):
        return env
    variable = airflow_variable() if callable(airflow_variable) else airflow_variable
    if variable:
        return str(variable)
    if default_file and Path(default_file).is_file():
        return str(default_file)
    return None


def resolve_settings(explicit: str | Path | None = None, *,
                     airflow_variable: str | Callable[[], str | None] | None = None,
                     default_file: str | Path | None = None,
                     overrides: Mapping[str, Any] | None = None,
                     connection: Mapping[str, Mapping[str, Any]] | None = None) -> Settings:
    """The settings, layered from lowest to highest: built-in defaults, the config file of
    :func:`resolve_config_path`, ``overrides`` (whole top-level keys, as a caller's keyword
    arguments), ``connection`` (keys of a section from a connection store, e.g. an Airflow
    Elasticsearch connection for ``search``; merged into the file's section), and last the
    environment (``NEWSWATCH_<SECTION>__<KEY>``: an operator's explicit variable wins).

    No side effects: nothing is written to the environment. Raises ConfigError with a
    one-line message naming the key and the problem.
    """
    path = resolve_config_path(explicit, airflow_variable=airflow_variable,
                               default_file=default_file)
    data: dict[str, Any] = {}
    source = "settings"
    if path is not None:
        config_path = Path(path)
        data = _read_yaml(config_path)
        _resolve_feeds_reference(data, config_path.parent)
        source = str(config_path)
        data["config_path"] = str(config_path)
    data.update(overrides or {})
    for section, values in (connection or {}).items():
        current = data.get(section)
        data[section] = {**(current if isinstance(current, dict) else {}),
                         **{k: v for k, v in values.items() if v is not None and v != ""}}
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from exc
    except SettingsError as exc:  # an environment override that is not valid JSON
        raise _environment_error(exc) from exc


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (else as :func:`resolve_settings` finds them), with keyword
    ``overrides`` of whole top-level keys (tests and library callers)."""
    return resolve_settings(path, overrides=overrides)
