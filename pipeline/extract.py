"""The extraction stage: download article pages and store their text.

Every article gets text: the page's when it can be read, else what the feed said about it
(``text_source = "feed"``), else its headline (``text_source = "title"``: an item with only a
title and a link whose page is unreadable is still news, so it is embedded, storied, indexed and
scored like any other; a page read later becomes its next version). Every outcome is counted,
so "why does this article have only its summary?" has an answer in ``newswatch feeds`` / the
run summary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.extractors import extract_html, looks_paywalled
from pipeline.fetcher import OUTCOMES as FETCH_OUTCOMES
from pipeline.fetcher import Fetcher, FetchResult, host_key
from pipeline.hostqueue import HOST_BUDGET, STAGE_BUDGET, Deferred, run_per_host
from pipeline.language import OVERRIDDEN, identifier_held, language_verdict
from pipeline.records import Store
from pipeline.sanitize import plausible_date, strip_control, strip_control_bytes
from pipeline.settings import Settings
from pipeline.stages import StageContext
from pipeline.story_text import derive_title

log = logging.getLogger(__name__)

STAGE = "extract"
# Fetch outcomes worth another try on a later run; anything else falls back for good.
TRANSIENT_OUTCOMES = {"timeout", "connection-error", "rate-limited"}
ITEM_ERROR = "item-error"  # an unexpected error with this article; the others went on
# A stored version whose text outweighed a wrong declared language (language.language_verdict).
LANGUAGE_FROM_TEXT = "language-from-text"


@dataclass(slots=True)
class ExtractionOutcome:
    article_id: str
    outcome: str  # ok, http-403, paywall, empty, timeout, ...
    text_source: str | None  # page, feed, title or None (no text at all)
    version: str  # new-version or unchanged
    language_source: str | None = None  # what decided the stored language (language.py)


def _fetch_outcome_name(result: FetchResult) -> str:
    if result.outcome == "http-error" and result.status:
        return f"http-{result.status}"
    return result.outcome


def extract_one(store: Store, fetcher: Fetcher, settings: Settings,
                article: dict[str, Any]) -> ExtractionOutcome:
    """Fetch, extract and store one article; fall back to the feed text when the page fails."""
    article_id = article["article_id"]
    url = article.get("link") or article.get("url")
    conf = settings.extraction
    outcome = "feed-only"
    status = "fallback"
    if url and conf.fetch_pages:
        result = fetcher.get(url, accept="text/html,application/xhtml+xml;q=0.9,*/*;q=0.5")
        if result.ok:
            outcome, page = _extract_page(result, conf.engine, conf.min_text_chars,
                                          article.get("source"))
            if page is not None:
                # Page text is display text too: no escape sequences or control characters.
                title = strip_control(page.title or "", keep_newlines=False) \
                    or article.get("entry_title")
                text = strip_control(page.text)
                verdict = language_verdict(title, text, page.language or article.get("language"))
                version = store.save_article_text(
                    article_id, title=title, text=text, text_source="page", status="ok",
                    outcome="ok",
                    authors=[strip_control(a, keep_newlines=False) for a in page.authors],
                    published_at=plausible_date(page.published_at), language=verdict.code,
                    language_decided=True)
                return ExtractionOutcome(article_id, "ok", "page", version, verdict.source)
        else:
            outcome = _fetch_outcome_name(result)
            if result.outcome in TRANSIENT_OUTCOMES or (result.status or 0) >= 500:
                status = "retry"
    if article.get("text_source") == "page":
        # A page we already read once stays: a later failure is noted, not a downgrade.
        store.record_extraction_attempt(article_id, status=status, outcome=outcome)
        return ExtractionOutcome(article_id, outcome, "page", "unchanged")
    title = (article.get("entry_title") or "").strip()
    fallback, text_source = (article.get("entry_summary") or "").strip(), "feed"
    if not fallback and title:
        fallback, text_source = title, "title"
    # An item without a headline (or whose title was only link text) is listed, alerted and
    # searched under its summary's first sentence, as stories already name it.
    title = title or derive_title(fallback)
    if not fallback:  # neither summary nor headline: nothing to show, embed or search
        status, text_source = ("failed" if status == "fallback" else status), None
    verdict = language_verdict(title, fallback, article.get("language"))
    version = store.save_article_text(
        article_id, title=title or None, text=fallback, text_source=text_source or "feed",
        status=status, outcome=outcome, language=verdict.code, language_decided=True)
    return ExtractionOutcome(article_id, outcome, text_source, version, verdict.source)


def _extract_page(result: FetchResult, engine: str, min_chars: int, source: str | None):
    content_type = result.headers.get("content-type", "")
    if content_type and "html" not in content_type and "xml" not in content_type:
        return "not-html", None
    try:
        page = extract_html(strip_control_bytes(result.content), result.url, engine=engine,
                            min_text_chars=min_chars, known_site_names=(source,))
    except Exception as exc:  # an extractor bug must not stop the run
        log.warning("extraction failed for %s: %s", result.url, exc)
        return "extract-error", None
    if len(page.text.strip()) < min_chars:
        # Only a short page is judged a paywall: metered pages often carry the full text.
        return ("paywall" if looks_paywalled(result.content) else "empty"), None
    return "ok", page


def extract_pending(
    store: Store,
    settings: Settings,
    run_id: str,
    *,
    fetcher: Fetcher | None = None,
    limit: int | None = None,
    page_budget: int | None = None,
    on_article_done: Callable[[ExtractionOutcome], None] | None = None,
) -> dict[str, int]:
    """Extract up to ``limit`` articles waiting for text (new, changed in its feed, or to
    retry), downloading at most ``page_budget`` pages (None: no cap); articles whose page
    would exceed it stay pending for the next run. Counts ``downloaded`` pages too.

    Pages are fetched fairly per host within the stage and host time budgets; articles a
    budget leaves unstarted are counted (``deferred-*``) and stay pending."""
    if limit is None:  # one call per stage (Airflow task): the per-run cap is the limit
        limit = page_budget = settings.extraction.max_articles_per_run
    pending = store.articles_to_extract(limit, settings.extraction.max_attempts)
    counts: dict[str, int] = {}

    def downloads(article: dict[str, Any]) -> bool:
        return settings.extraction.fetch_pages and bool(article.get("link") or article.get("url"))

    if page_budget is not None:
        over_cap = {a["article_id"] for a in [a for a in pending if downloads(a)][
            max(page_budget, 0):]}
        pending = [a for a in pending if a["article_id"] not in over_cap]
    if not pending:
        return {}
    own_fetcher = fetcher is None
    fetcher = fetcher or Fetcher(settings.fetch)
    deferred: Deferred[dict[str, Any]] = Deferred()
    try:
        done = run_per_host(
            pending, lambda a: host_key(a.get("link") or a.get("url") or ""),
            lambda a: _safe_extract_one(store, fetcher, settings, a),
            concurrency=settings.fetch.concurrency,
            per_host=settings.fetch.per_host_concurrency,
            stage_budget_s=settings.extraction.stage_budget_s,
            host_budget_s=settings.fetch.host_budget_s, deferred=deferred,
            thread_name_prefix="extract")
        for article, result in done:
            if downloads(article):
                counts["downloaded"] = counts.get("downloaded", 0) + 1
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
            if result.version == "new-version":
                counts["new-version"] = counts.get("new-version", 0) + 1
                if result.language_source == OVERRIDDEN:  # the feed's tag was wrong
                    counts[LANGUAGE_FROM_TEXT] = counts.get(LANGUAGE_FROM_TEXT, 0) + 1
            if on_article_done:
                on_article_done(result)
    finally:
        if own_fetcher:
            fetcher.close()
    counts.update(deferred.counts())  # untouched, so still pending for the next run
    if deferred:
        log.warning("extract: %d article(s) left for the next run (%s)", len(deferred),
                    ", ".join(f"{k}={v}" for k, v in deferred.counts().items()))
    for outcome, n in counts.items():
        store.count(run_id, STAGE, outcome, n)
    return counts


def _safe_extract_one(store: Store, fetcher: Fetcher, settings: Settings,
                      article: dict[str, Any]) -> ExtractionOutcome:
    try:
        return extract_one(store, fetcher, settings, article)
    except Exception as exc:  # one bad article never stops a run
        log.exception("article %s failed: %s", article["article_id"], exc)
        try:  # retried on a later run, up to the attempt limit
            store.record_extraction_attempt(article["article_id"], status="retry",
                                            outcome=ITEM_ERROR)
        except Exception:
            log.exception("article %s: cannot record the failure", article["article_id"])
        return ExtractionOutcome(article["article_id"], ITEM_ERROR, None, "unchanged")


# What the extraction stage counts under "extract": an article's outcome (a page's fetch
# outcome, with ``http-<status>`` for ``http-error``, or what extraction made of it), plus
# ``downloaded`` and ``new-version`` tallies and the budgets' deferrals.
OUTCOMES = ("ok", "feed-only", "not-html", "extract-error", "paywall", "empty",
            *(o for o in FETCH_OUTCOMES if o not in ("ok", "http-error")), "http-<status>",
            "downloaded", "new-version", LANGUAGE_FROM_TEXT, ITEM_ERROR, STAGE_BUDGET,
            HOST_BUDGET)


def run(context: StageContext) -> dict[str, int]:
    """The extraction stage (options: ``limit`` and ``page_budget`` for one chunk of a run;
    ``on_article_done``, called with each outcome)."""
    on_done = context.options.get("on_article_done")
    if on_done is None and context.progress is not None:
        on_done = lambda _o: context.advance(STAGE, 1)  # noqa: E731
    settings = context.settings
    # Held for this chunk only (not beside the embedding models), mapped in milliseconds.
    with identifier_held(settings.embedding.cache_dir(settings.data_dir)):
        return extract_pending(context.store, settings, context.run_id,
                               limit=context.options.get("limit"),
                               page_budget=context.options.get("page_budget"),
                               on_article_done=on_done)
