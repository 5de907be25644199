"""The web app answers bad parameters with a 400 and one line, never a 500: the two reported
requests, then generated junk at every parameter of every endpoint, standalone and mounted
under a prefix (as in Airflow). A small fictional store; keyword search only (no model)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import query as query_module
from pipeline.index import index_pending
from pipeline.records import open_store
from pipeline.search import open_search
from pipeline.settings import Settings
from pipeline.web.app import create_app
from tests.support.factories import add_article, add_story

ENDPOINTS = {  # path -> its query parameters
    "/api/search": ("q", "since", "until", "source", "limit", "by_story", "mode"),
    "/api/stories": ("q", "since", "limit"),
    "/api/stories/s1": (),
    "/api/feeds": (),
    "/api/alerts": ("watch", "since", "limit"),
    "/": ("q", "since", "until", "source", "watch", "mode", "limit"),
    "/stories/s1": (),
    "/feeds": (),
}


@pytest.fixture(scope="module")
def web_settings(tmp_path_factory) -> Settings:
    directory = tmp_path_factory.mktemp("webjunk")
    settings = Settings(store={"url": f"sqlite:///{directory / 'r.db'}"})
    store = open_store(settings.store.url)
    now = datetime.now(UTC) - timedelta(hours=2)
    for n in range(3):
        add_article(store, f"a{n}", url=f"https://news.example/{n}", source="Gazette",
                    title=f"Harbour bridge report {n}",
                    text="A fictional harbour bridge opened. " * 10, content_hash=f"h{n}",
                    published_at=now, story_id="s1")
    add_story(store, "s1", title="Harbour bridge report", at=now, article_count=3,
              sources=["Gazette"])
    backend = open_search(settings)
    index_pending(store, backend, None)
    backend.close()
    store.close()
    return settings


@pytest.fixture(scope="module")
def clients(web_settings):
    query_module.embed_query = lambda *_a, **_k: None  # keyword only: no model in this test
    standalone = TestClient(create_app(web_settings, default_mode="keyword"))
    parent = FastAPI()
    parent.mount("/newswatch", create_app(web_settings, default_mode="keyword"))
    mounted = TestClient(parent)
    with standalone, mounted:
        yield {"": standalone, "/newswatch": mounted}


def one_line_400(response, parameter: str) -> None:
    assert response.status_code == 400, response.text[:300]
    if response.headers["content-type"].startswith("application/json"):
        message = response.json()["error"]
    else:
        message = re.search(r'<p class="error"[^>]*>(.*?)</p>', response.text, re.S)
        message = message.group(1) if message else response.text
    assert "\n" not in message.strip() and parameter in message, message


@pytest.mark.parametrize("prefix", ["", "/newswatch"])
@pytest.mark.parametrize("path", ["/api/search", "/"])
def test_the_two_reported_requests_are_400(clients, prefix, path):
    client = clients[prefix]
    one_line_400(client.get(f"{prefix}{path}?q=a%00b"), "q")
    one_line_400(client.get(f"{prefix}{path}?q=a&since=99999999d"), "since")


@pytest.mark.parametrize("value", ["1900-01-01", "3000-01-01", "1200m", "99999999999999999h"])
@pytest.mark.parametrize("name", ["since", "until"])
def test_dates_outside_a_sane_range_are_400(clients, name, value):
    one_line_400(clients[""].get("/api/search", params={"q": "bridge", name: value}), name)


def test_story_id_with_a_nul_is_400(clients):
    one_line_400(clients[""].get("/api/stories/s%001"), "story_id")
    assert clients[""].get("/stories/s%001").status_code == 400


def test_good_requests_still_work(clients):
    response = clients[""].get("/api/search", params={"q": "harbour", "since": "7d"})
    assert response.status_code == 200 and response.json()["total"] == 3
    assert clients["/newswatch"].get("/newswatch/", params={"q": "harbour"}).status_code == 200


JUNK = st.one_of(
    st.text(max_size=40),  # any Unicode, control characters included
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=10),
    st.sampled_from(['"', '"unbalanced', "a OR", "-", "(", ")", "*", "NEAR(", "AND", "^",
                     "x' OR '1'='1", "\\", "%", "%00", "[[", "]]", "{}", "\ud7ff", "\ufeff"]),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30).map(str),
    st.tuples(st.one_of(st.integers(0, 10 ** 4), st.integers(10 ** 6, 10 ** 12)),
              st.sampled_from("hdwm")).map(lambda p: f"{p[0]}{p[1]}"),  # durations, huge too
    st.text(min_size=1, max_size=5).map(lambda t: f"a{t}\x00{t}b"),  # a NUL inside a word
    st.sampled_from(["9" * 5000, "x" * 5000, "1e309", "NaN", "-0", "0x10", "１２", "٣"]),
    st.datetimes().map(lambda d: d.isoformat()),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
)
PARAMS = st.sampled_from([(p, n) for p, names in ENDPOINTS.items() for n in names])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=PARAMS, value=JUNK, prefix=st.sampled_from(["", "/newswatch"]),
       extra=st.dictionaries(st.sampled_from(["q", "since", "until", "limit", "mode"]), JUNK,
                             max_size=2))
def test_junk_at_any_parameter_is_never_a_500(clients, target, value, prefix, extra):
    path, name = target
    params = {**{k: v for k, v in extra.items() if k in ENDPOINTS[path]}, name: value}
    if path in ("/api/search",) and name != "q":
        params.setdefault("q", "bridge")
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())
    response = clients[prefix].get(f"{prefix}{path}?{query}")
    assert response.status_code < 500, (path, params, response.text[:300])
    if response.status_code == 400 and path.startswith("/api/"):
        assert "\n" not in response.json()["error"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(story_id=JUNK, page=st.booleans())
def test_junk_story_ids_are_never_a_500(clients, story_id, page):
    path = f"/{'stories' if page else 'api/stories'}/{quote(story_id, safe='')}"
    response = clients[""].get(path)
    assert response.status_code < 500, (path, response.text[:300])
