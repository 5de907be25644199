"""The ``newswatch`` command line: a thin Typer + Rich layer over the library.

Every command takes ``--config PATH`` (default ``$NEWSWATCH_CONFIG`` or
``config/newswatch.yaml``), prints a one-line reason and exits non-zero on failure
(2 for configuration errors).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pipeline.settings import ConfigError, Settings, resolve_settings
from pipeline.terminal import clean, safe

app = typer.Typer(
    name="newswatch",
    help="Monitor news feeds: fetch, extract, group into stories, search and alert.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
feeds_app = typer.Typer(help="List feeds with their health, or bring a dead feed back.",
                        invoke_without_command=True)
app.add_typer(feeds_app, name="feeds")
alerts_app = typer.Typer(help="Alerts sent, pending and failed; retry failed deliveries.",
                         invoke_without_command=True)
app.add_typer(alerts_app, name="alerts")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

DEFAULT_CONFIG = "config/newswatch.yaml"
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file \\[default: $NEWSWATCH_CONFIG or "
                 f"{DEFAULT_CONFIG}]", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class CommandError(Exception):
    """A failure to report to the user as one line (exit code 1)."""


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(safe(f"newswatch: {message}", "red"), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def get_settings(config: Path | None) -> Settings:
    try:
        return resolve_settings(config, default_file=DEFAULT_CONFIG)
    except ConfigError as exc:
        raise fail(str(exc), code=2) from exc


@contextmanager
def stage_progress(enabled: bool = True):
    """Rich progress bars, one per stage plus the run's chunks; yields the pipeline's progress
    callback. A stage that announces a new total starts a new round (its next chunk)."""
    if not enabled:
        yield None
        return
    progress = Progress(TextColumn("{task.description:<18}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                        transient=False)
    tasks: dict[str, Any] = {}
    chunk = {"done": 0, "total": 0}

    def label(stage: str) -> str:
        if stage == "chunk" or chunk["total"] <= 1:
            return stage
        return f"{stage} · chunk {min(chunk['done'] + 1, chunk['total'])}"

    def callback(stage: str, advance: int, total: int | None) -> None:
        if stage == "chunk":
            chunk["done"] += advance
            chunk["total"] = max(total or 0, chunk["total"])
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        elif total is not None and not advance and stage != "chunk":
            progress.reset(tasks[stage], total=total, description=label(stage))
        elif total is not None:
            progress.update(tasks[stage], total=total)
        if advance:
            progress.advance(tasks[stage], advance)

    with progress:
        yield callback


def since_option(value: str | None):
    """Parse a --since/--until value, or exit with the one-line reason."""
    from pipeline.search.base import parse_since

    try:
        return parse_since(value)
    except ValueError as exc:
        raise fail(str(exc)) from exc


# Libraries that log every retry with a traceback; the stage reports the outcome in one line.
NOISY_LOGGERS = ("elastic_transport", "elasticsearch", "urllib3")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not verbose:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


# ---- run ------------------------------------------------------------------------------------

@contextmanager
def _counting_bar(label: str, total: int | None = None) -> Iterator[Callable[[int, int | None],
                                                                           None]]:
    """A progress bar on stderr and its ``progress(advance, total)`` callback (the library's
    progress protocol: ``total`` given once work is known; a new total starts a new pass,
    e.g. the multilingual embedding, then the English one)."""
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console) as bar:
        task = bar.add_task(label, total=total)

        def progress(advance: int, new_total: int | None) -> None:
            if new_total is not None:
                bar.reset(task, total=new_total)
            bar.advance(task, advance)

        yield progress


def _read_input(path: Path) -> list[dict[str, Any]]:
    """The articles of a JSONL input file, or a one-line error naming the bad line."""
    from pipeline.article_input import ArticleInputError, read_articles

    if not path.is_file():
        raise fail(f"no such file: {path}")
    try:
        return read_articles(path)
    except ArticleInputError as exc:
        raise fail(str(exc)) from exc


def _write_jsonl(rows: list[dict[str, Any]], output: Path | None, summary: str) -> None:
    """One JSON object per line to ``output`` (with a summary on stderr) or to stdout."""
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if output is None:
        sys.stdout.write(lines)
    else:
        output.write_text(lines, encoding="utf-8")
        err_console.print(safe(f"{summary} → {output}"))


@app.command()
def run(
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option(help="Fetch every feed now, even if not due.")] = False,
    json_out: JsonOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the pipeline once: fetch feeds, extract articles, stories, index, alerts.

    Exits 1 when a stage failed or no feed at all could be fetched (single feeds failing is
    normal and only reported). With --json, stdout holds only the run summary: console-channel
    alerts and progress go to stderr.
    """
    from pipeline.run import run_once

    _setup_logging(verbose)
    settings = get_settings(config)
    if not settings.enabled_feeds():
        raise fail("no feeds configured (add some under 'feeds:' in the config)")
    with stage_progress(not json_out) as progress, \
            redirect_stdout(sys.stderr if json_out else sys.stdout):
        report = run_once(settings, force=force, progress=progress)
    if json_out:
        sys.stdout.write(json.dumps(report.summary(), default=str, indent=2) + "\n")
    else:
        print_run_report(report)
    if report.errors:
        failed = ", ".join(sorted(report.errors))
        raise fail(f"stage {failed} failed: {next(iter(report.errors.values()))}"
                   if len(report.errors) == 1 else f"stages {failed} failed (see above)")
    if report.all_feeds_failed:
        raise fail(f"no feed could be fetched ({len(report.feeds)} tried; see the table above)")


def print_run_report(report) -> None:
    from pipeline.records.feeds import FEED_SUCCESS

    table = Table(title=f"Feeds (run {report.run_id[:8]})", title_justify="left")
    for col in ("feed", "outcome", "status", "entries", "new", "error"):
        table.add_column(col, overflow="fold")
    for f in report.feeds:
        style = "green" if f.outcome in FEED_SUCCESS else (
            "dim" if str(f.outcome).startswith("skipped") else "red")
        table.add_row(safe(f.name or f.url), safe(f.outcome, style),
                      str(f.status or ""), str(f.entries), str(f.new), safe((f.error or "")[:120]))
    console.print(table)
    stages = Table(title="Outcomes", title_justify="left")
    stages.add_column("stage")
    stages.add_column("counts", overflow="fold")
    for stage, counts in report.stages.items():
        stages.add_row(stage, ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    console.print(stages)
    for stage, error in report.errors.items():
        err_console.print(safe(f"stage {stage} failed: {error}", "red"))
    for stage, n in report.item_errors.items():
        err_console.print(safe(f"{stage}: {n} item(s) failed on their own (item-error); the "
                               "rest of the stage completed", "yellow"))
    if report.stages.get("index", {}).get("unavailable"):
        err_console.print(safe("index: the search backend is unavailable; the index catches "
                               "up on the next run (records are kept)", "yellow"))
    for stage, n in report.left_pending.items():
        err_console.print(safe(f"{stage}: {n} item(s) left pending for the next run (time "
                               "budget spent)", "yellow"))
    console.print(f"feeds ok: {report.feeds_ok}, failed: {report.feeds_failed}, "
                  f"total: {len(report.feeds)}")


# ---- demo -----------------------------------------------------------------------------------

@app.command()
def demo(
    config: ConfigOption = Path("examples/demo.yaml"),
    keep: Annotated[bool, typer.Option(help="Reuse the existing demo store instead of starting "
                                      "fresh.")] = False,
    port: Annotated[int | None, typer.Option(help="Port for the sample site.")] = None,
) -> None:
    """Serve the bundled sample site on 127.0.0.1 and run the pipeline over it, offline."""
    from pipeline.run import run_once
    from pipeline.sample_site import SampleSite

    settings = get_settings(config)
    db_path = _sqlite_path(settings.store.url)
    if not keep:
        if db_path is None:  # never empty a shared database on the user's behalf
            raise fail("the demo starts from an empty store and only removes SQLite files; "
                       f"store.url is {settings.store.url.split('://')[0]}://…: "
                       "use --keep, or a sqlite:/// store.url")
        _remove_sqlite_files(db_path)
    site_dir = _resolve(settings.demo.site_dir, settings)
    try:
        site = SampleSite(site_dir, settings.demo.host,
                          settings.demo.port if port is None else port,
                          seeds_dir=_resolve(settings.demo.seeds_dir, settings))
    except OSError as exc:
        raise fail(f"cannot serve the sample site on {settings.demo.host}:"
                   f"{settings.demo.port}: {exc.strerror or exc}") from exc
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    if site.missing_seeds:
        console.print(safe(f"The user's seed articles are not in {settings.demo.seeds_dir}: "
                           "the two Qin Gang pages carry the sample site's fictional pair "
                           "(set demo.seeds_dir to serve the real ones).", "yellow"))
    with site:
        if port is not None or not settings.feeds:
            settings.feeds = [{"url": u} for u in site.feed_urls()]  # type: ignore[assignment]
        console.print(f"Sample site: {site.base_url} ({len(settings.feeds)} feeds)")
        with stage_progress() as progress:
            report = run_once(settings, force=True, progress=progress)
    print_run_report(report)
    _print_demo_summary(settings)
    if report.all_feeds_failed or report.errors:
        raise fail("the demo run failed (see above)")


def _print_demo_summary(settings: Settings) -> None:
    from pipeline.records import open_store

    store = open_store(settings.store.url)
    try:
        counts = store.counts()
        console.print("Store: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        from pipeline.records.stories import list_stories

        top = list_stories(store, limit=10)
        if top:
            _print_stories(top, title="Top stories")
    finally:
        store.close()
    console.print('\nExample: newswatch search "Qin Gang" --config examples/demo.yaml')
    _search_and_print(settings, "Qin Gang", limit=5, as_json=False, by_story=False)


# ---- search ---------------------------------------------------------------------------------

@app.command()
def search(
    query: Annotated[str, typer.Argument(help='Words, "a phrase", -exclude, OR.')],
    config: ConfigOption = None,
    since: Annotated[str | None, typer.Option(help="7d, 12h, 2w or a date (2023-06-18).")] = None,
    until: Annotated[str | None, typer.Option(help="A date or duration, like --since.")] = None,
    source: Annotated[list[str] | None, typer.Option(help="Only this source (repeatable).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    by_story: Annotated[bool, typer.Option("--by-story", help="Group results by story.")] = False,
    mode: Annotated[str, typer.Option(help="hybrid, keyword or semantic.")] = "hybrid",
    json_out: JsonOption = False,
) -> None:
    """Search the indexed articles (title weighted above body)."""
    settings = get_settings(config)
    _search_and_print(settings, query, since=since, until=until, sources=source or [],
                      limit=limit, by_story=by_story, mode=mode, as_json=json_out)


def _search_and_print(settings: Settings, query: str, *, since: str | None = None,
                      until: str | None = None, sources: list[str] | None = None,
                      limit: int = 20, by_story: bool = False, mode: str = "hybrid",
                      as_json: bool = False) -> None:
    from pipeline.query import run_search
    from pipeline.search.base import SearchMisconfigured, SearchUnavailable

    try:
        results = run_search(settings, query, since=since, until=until, sources=sources or [],
                             limit=limit, by_story=by_story, mode=mode)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    except (SearchUnavailable, SearchMisconfigured) as exc:
        raise fail(f"search failed: {exc}") from exc
    if as_json:
        console.print_json(json.dumps(results.to_json(), default=str))
        return
    if not results.hits:
        console.print(safe(f"No results for {query!r}."))
        return
    groups = results.groups if by_story and results.groups else None
    table = Table(title=safe(f"{results.total} result(s) for {query!r}"), title_justify="left")
    for col in ("published", "source", "title", "snippet"):
        table.add_column(col, overflow="fold")
    if groups:
        table.add_column("story")
    rows = [(g.story_id, h) for g in groups for h in g.hits] if groups else \
        [(None, h) for h in results.hits]
    for story_id, hit in rows:
        row = [_fmt_time(hit.published_at), safe(hit.source), safe(hit.title),
               highlight_snippet(hit.snippet)]
        if groups:
            row.append(safe(story_id))
        table.add_row(*row)
    console.print(table)


# ---- stories --------------------------------------------------------------------------------

@app.command()
def stories(
    config: ConfigOption = None,
    since: Annotated[str | None, typer.Option(help="7d, 12h or a date.")] = None,
    query: Annotated[str | None, typer.Option(help="Only stories whose title contains this.")]
    = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    json_out: JsonOption = False,
) -> None:
    """Stories with article counts, sources and first/last seen."""
    from pipeline.records import open_store
    from pipeline.records.stories import list_stories

    settings = get_settings(config)
    since_at = since_option(since)
    store = open_store(settings.store.url)
    try:
        rows = list_stories(store, since=since_at, query=query, limit=limit)
    finally:
        store.close()
    if json_out:
        console.print_json(json.dumps(rows, default=str))
    else:
        _print_stories(rows, title=f"{len(rows)} stor{'y' if len(rows) == 1 else 'ies'}")


@app.command()
def cluster(
    input_path: Annotated[Path, typer.Option("--input", "-i", help="Articles as JSONL: id, "
                                             "title, text, url, source, published_at.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write JSONL here "
                                                "(default: stdout).")] = None,
    config: ConfigOption = None,
) -> None:
    """Group articles from a JSONL file into stories with the shipped defaults.

    Writes {"id", "story_id", "duplicate_of"} per input article (a throwaway store is used).
    """
    from pipeline.cluster import cluster_records

    settings = get_settings(config)
    records = _read_input(input_path)
    with _counting_bar("embed", len(records)) as progress:
        try:
            results = cluster_records(records, settings, progress=progress)
        except ValueError as exc:
            raise fail(str(exc)) from exc
    _write_jsonl(results, output,
                 f"{len(results)} article(s), {len({r['story_id'] for r in results})} stories")


@app.command()
def match(
    watch: Annotated[str, typer.Option("--watch", "-w", help="Watch name (configured, or the "
                                       "built-in 'taiwan').")],
    input_path: Annotated[Path | None, typer.Option("--input", "-i", help="Score articles "
                                                    "from JSONL: id, title, text, url, source, "
                                                    "published_at.")] = None,
    since: Annotated[str | None, typer.Option(help="Instead: preview stories in the store "
                                              "active since 7d, 12h or a date.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="With --input: write "
                                                "JSONL here (default: stdout).")] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Test a watch: score a JSONL file ({"id", "score", "relevant", "passage", "reasons"} per
    article; the passage is where the article talks about the topic), or preview what it
    would have alerted on in the store. Sends nothing, writes nothing to the store."""
    from pipeline.match import UnknownWatchError, find_watch

    settings = get_settings(config)
    if (input_path is None) == (since is None):
        raise fail("give exactly one of --input FILE or --since 7d", code=2)
    try:
        chosen = find_watch(settings, watch)
    except UnknownWatchError as exc:
        raise fail(str(exc), code=2) from exc
    with _counting_bar("score") as progress:
        if input_path is not None:
            from pipeline.match import match_records

            records = _read_input(input_path)
            results = match_records(chosen, records, settings, progress=progress)
        else:
            from pipeline.match import preview_stories
            from pipeline.records import open_store

            since_at = since_option(since)
            store = open_store(settings.store.url)
            try:
                stories = preview_stories(store, settings, chosen, since_at, progress=progress)
            finally:
                store.close()
    if input_path is not None:
        _write_jsonl(results, output, f"{len(results)} article(s), "
                     f"{sum(r['relevant'] for r in results)} relevant")
        return
    if json_out:
        console.print_json(json.dumps([s.to_json() for s in stories]))
        return
    relevant = sum(s.relevant for s in stories)
    table = Table(title=safe(f"watch {chosen.name!r}: {relevant} "
                             f"stor{'y' if relevant == 1 else 'ies'} would alert (min_score "
                             f"{chosen.min_score:.2f}); nothing sent"), title_justify="left")
    for col in ("score", "alert", "title", "sources", "why"):
        table.add_column(col, overflow="fold")
    for story in stories:
        table.add_row(f"{story.score:.2f}", "yes" if story.relevant else "no",
                      safe(story.title), safe(", ".join(story.sources)),
                      safe("; ".join(story.reasons)))
    console.print(table)


@app.command("fit-watch")
def fit_watch(
    watch: Annotated[str, typer.Option("--watch", "-w", help="Watch name (configured, or the "
                                       "built-in 'taiwan').")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Labelled JSONL: id, title, text "
                                       "and label (1 = relevant to the watch, 0 = not).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the "
                                                "model (default: <data_dir>/watch_models/"
                                                "<watch>.json, where scoring looks for "
                                                "it).")] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Fit a watch's own relevance model from articles you labelled: the coefficients and a
    learned term on the article embeddings (pipeline/watch_model.py). Prints a 5-fold
    estimate with and without the term; the model applies only to this watch as configured
    now and to the configured embedding model (refit after editing the watch)."""
    import numpy as np

    from pipeline.embeddings import EmbeddingSpec
    from pipeline.match import UnknownWatchError, find_watch
    from pipeline.watch_model import WatchModelError, fit_from_labels, save_watch_model

    settings = get_settings(config)
    try:
        chosen = find_watch(settings, watch)
    except UnknownWatchError as exc:
        raise fail(str(exc), code=2) from exc
    records = _read_input(data)
    labels = []
    for record in records:
        label = record.get("label")
        if label not in (0, 1):  # also true/false
            raise fail(f"{data}: article {record['id']!r} has label {label!r} (use 1 = "
                       "relevant or 0 = not)", code=2)
        labels.append(int(label))
    target = output or Path(settings.data_dir) / "watch_models" / f"{chosen.name}.json"
    spec = EmbeddingSpec.of(settings)
    try:
        with _counting_bar("embed") as progress:
            model, estimate = fit_from_labels(chosen, records, np.array(labels), spec,
                                              progress)
        save_watch_model(model, target)
    except (WatchModelError, OSError) as exc:
        raise fail(str(exc)) from exc
    summary = {"watch": chosen.name, "articles": len(records), "positives": sum(labels),
               "cv_5fold": estimate, "model": str(target)}
    if json_out:
        console.print_json(json.dumps(summary))
        return
    for name, label in (("learned", "with the learned term"),
                        ("features_only", "shipped features only")):
        m = estimate[name]
        console.print(f"5-fold CV, {label}: precision {m['precision']:.3f}, recall "
                      f"{m['recall']:.3f}, F1 {m['f1']:.3f}")
    console.print(safe(f"watch {chosen.name!r}: fitted on {len(records)} articles "
                       f"({sum(labels)} relevant) → {target}"))


# ---- reindex --------------------------------------------------------------------------------

@app.command()
def reindex(
    config: ConfigOption = None,
    search_url: Annotated[str | None, typer.Option(
        "--search", help="Rebuild this search backend instead of the configured one "
        "(http(s):// for Elasticsearch).")] = None,
) -> None:
    """Rebuild the search index from the SQL records (the records are the source of truth)."""
    from pipeline.index import reindex as rebuild
    from pipeline.records import open_store
    from pipeline.search import open_search
    from pipeline.search.base import SearchMisconfigured, SearchUnavailable

    settings = get_settings(config)
    if search_url is not None:
        try:
            settings.search.url = search_url
        except ValidationError as exc:
            raise fail(f"--search: {exc.errors()[0]['msg']}", code=2) from exc
    store = open_store(settings.store.url)
    backend = open_search(settings)
    try:
        total = store.counts()["versions"] and sum(1 for _ in store.iter_articles())
        with Progress(TextColumn("reindex"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console) as bar:
            task = bar.add_task("reindex", total=total)
            counts = rebuild(store, backend,
                             progress=lambda done, _total: bar.update(task, completed=done))
    except SearchUnavailable as exc:
        raise fail(f"search backend unavailable: {exc}") from exc
    except SearchMisconfigured as exc:
        raise fail(f"reindex failed: {exc}") from exc
    finally:
        backend.close()
        store.close()
    console.print(f"indexed {counts.get('indexed', 0)} article(s) into {backend.name}"
                  + (f", {counts['rejected']} rejected" if counts.get("rejected") else ""))


# ---- feeds ----------------------------------------------------------------------------------

@feeds_app.callback()
def feeds_list(
    ctx: typer.Context,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Feeds with their state and outcome counts (what happened to every fetch)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = config
        return
    from pipeline.records import open_store

    settings = get_settings(config)
    store = open_store(settings.store.url)
    try:
        store.sync_feeds(settings.feeds)
        feeds = store.list_feeds()
        outcomes = store.feed_outcome_counts()
        articles = store.feed_article_counts()
    finally:
        store.close()
    rows = []
    for f in feeds:
        state = "dead" if f.dead else ("disabled" if not f.enabled else "active")
        rows.append({"feed_id": f.feed_id, "name": f.display_name, "url": f.url, "state": state,
                     "last_outcome": f.last_outcome, "last_status": f.last_status,
                     "last_fetched_at": f.last_fetched_at, "failures": f.consecutive_failures,
                     "next_fetch_at": f.next_fetch_at, "articles": articles.get(f.feed_id, 0),
                     "outcomes": outcomes.get(f.feed_id, {}), "last_error": f.last_error})
    if json_out:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title=f"{len(rows)} feed(s)", title_justify="left")
    for col in ("feed", "state", "last", "fetched", "fails", "articles", "outcomes"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(safe(r["name"]), r["state"], safe(r["last_outcome"] or "-"),
                      r["last_fetched_at"].strftime("%Y-%m-%d %H:%M")
                      if r["last_fetched_at"] else "never",
                      str(r["failures"]), str(r["articles"]),
                      safe(", ".join(f"{k}={v}" for k, v in sorted(r["outcomes"].items()))))
    console.print(table)


@feeds_app.command("enable")
def feeds_enable(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The feed URL, as configured.")],
    config: ConfigOption = None,
) -> None:
    """Bring back a feed marked dead after repeated failures."""
    from pipeline.records import open_store

    settings = get_settings(config or ctx.obj)
    store = open_store(settings.store.url)
    try:
        if not store.enable_feed(url):
            raise fail(f"unknown feed: {url}")
    finally:
        store.close()
    console.print(safe(f"enabled: {url}"))


# ---- extract --------------------------------------------------------------------------------

@app.command()
def extract(
    sources: Annotated[list[str], typer.Argument(help="Saved .html/.html.gz files or URLs.")],
    config: ConfigOption = None,
    engine: Annotated[str | None, typer.Option(help="trafilatura or newspaper.")] = None,
) -> None:
    """Extract article text from saved pages or URLs; one JSON object per page."""
    from pipeline.extractors import extract_html, extract_path
    from pipeline.fetcher import Fetcher

    settings = get_settings(config)
    engine = engine or settings.extraction.engine
    failures = 0
    fetcher: Fetcher | None = None
    try:
        for source in sources:
            try:
                if source.startswith(("http://", "https://")):
                    fetcher = fetcher or Fetcher(settings.fetch)
                    result = fetcher.get(source)
                    if not result.ok:
                        raise CommandError(f"{result.outcome} {result.status or ''}".strip()
                                           + (f": {result.error}" if result.error else ""))
                    article = extract_html(result.content, result.url, engine=engine)
                else:
                    path = Path(source)
                    if not path.is_file():
                        raise CommandError("no such file")
                    article = extract_path(path, engine=engine)
            except Exception as exc:
                failures += 1
                err_console.print(safe(f"newswatch: {source}: {exc}", "red"), highlight=False)
                continue
            record = {"source": source, "title": article.title, "text": article.text,
                      "authors": article.authors,
                      "published_at": article.published_at.isoformat()
                      if article.published_at else None,
                      "language": article.language}
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if fetcher:
            fetcher.close()
    if failures:
        raise typer.Exit(1)


# ---- alerts ---------------------------------------------------------------------------------

@alerts_app.callback()
def alerts_list(
    ctx: typer.Context,
    config: ConfigOption = None,
    watch: Annotated[str | None, typer.Option(help="Only this watch.")] = None,
    since: Annotated[str | None, typer.Option(help="7d, 12h or a date.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Alerts with their delivery state per channel (sent, pending, failed)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = config
        return
    from pipeline.records import open_store
    from pipeline.records.alerts import list_alerts

    settings = get_settings(config)
    since_at = since_option(since)
    store = open_store(settings.store.url)
    try:
        rows = list_alerts(store, watch=watch, since=since_at)
    finally:
        store.close()
    if json_out:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title=f"{len(rows)} alert(s)", title_justify="left")
    for col in ("created", "watch", "kind", "status", "channels", "title"):
        table.add_column(col, overflow="fold")
    for row in rows:
        deliveries = ", ".join(f"{d['channel']}={d['status']}" for d in row.get("deliveries", []))
        table.add_row(_fmt_time(row.get("created_at")), safe(row["watch"]), row["kind"],
                      row["status"], safe(deliveries), safe(row.get("title")))
    console.print(table)


@alerts_app.command("retry")
def alerts_retry(
    ctx: typer.Context,
    config: ConfigOption = None,
    watch: Annotated[str | None, typer.Option(help="Only this watch.")] = None,
) -> None:
    """Retry failed deliveries now (quiet hours still apply)."""
    from pipeline.alerts.engine import retry_failed
    from pipeline.records import open_store

    settings = get_settings(config or ctx.obj)
    store = open_store(settings.store.url)
    try:
        counts = retry_failed(store, settings, watch=watch)
    finally:
        store.close()
    console.print(", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing to retry")


@app.command()
def digest(
    watch: Annotated[str, typer.Option("--watch", help="The watch (in digest mode).")],
    config: ConfigOption = None,
) -> None:
    """Send a watch's digest for the current window now (once per window)."""
    from pipeline.alerts.engine import send_digest
    from pipeline.records import open_store

    settings = get_settings(config)
    store = open_store(settings.store.url)
    try:
        counts = send_digest(store, settings, watch)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    finally:
        store.close()
    console.print(", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing to send")


# ---- serve ----------------------------------------------------------------------------------

@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
) -> None:
    """Serve the search page and JSON API (the same app the Airflow plugin mounts)."""
    from pipeline.web.serve import serve as run_server

    settings = get_settings(config)
    console.print(f"newswatch search page: http://{host}:{port}/")
    try:
        run_server(settings, host=host, port=port)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


# ---- helpers --------------------------------------------------------------------------------

def _sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _remove_sqlite_files(db_path: Path) -> None:
    """Start the demo fresh: the database and its WAL/SHM companions."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def _resolve(path: str, settings: Settings) -> Path:
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists() or not settings.config_path:
        return candidate
    return Path(settings.config_path).parent / candidate


def _print_stories(stories: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("story", "articles", "sources", "first seen", "last seen", "title",
                "merged from"):
        table.add_column(col, overflow="fold")
    for s in stories:  # merged from: ids consolidation folded in (earlier alerts name them)
        table.add_row(safe(s["story_id"]), str(s["article_count"]),
                      safe(", ".join(s.get("sources") or [])),
                      _fmt_time(s.get("first_seen_at")), _fmt_time(s.get("last_seen_at")),
                      safe(s.get("title")), safe(", ".join(s.get("merged_from") or [])))
    console.print(table)


def highlight_snippet(snippet: str) -> Text:
    """Render [[match]] markers as bold without interpreting feed text as Rich markup."""
    text = Text()
    for i, part in enumerate(clean(snippet).replace("]]", "[[").split("[[")):
        text.append(part, style="bold yellow" if i % 2 else "")
    return text


def _fmt_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "strftime") else str(value or "")


def main() -> None:
    """Console-script entry point: one-line errors, never a traceback for expected failures."""
    try:
        app()
    except ConfigError as exc:
        err_console.print(safe(f"newswatch: {exc}", "red"), highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[red]newswatch: interrupted[/red]")
        sys.exit(130)
    except Exception as exc:  # last resort: one line, not a traceback
        err_console.print(safe(f"newswatch: {type(exc).__name__}: {exc}", "red"),
                          highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
