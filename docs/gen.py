"""Generated parts of README.md and docs/cli.md, so they cannot drift from the code.

The README holds ``cog`` blocks (https://cog.readthedocs.io) that call these functions;
``make docs`` rewrites them and ``tests/test_docs.py`` fails when a block is stale, as
sqlite-utils does for its CLI reference. Sources: the Typer app (commands, their ``--help``),
the settings model (every key, its default and description), module docstrings (the layout)
and the benchmark results files (the quality figures).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[1]
LAYOUT_ROOTS = ("pipeline", "dags", "plugins", "benchmarks", "tests/support", "docs")


def out(text: str) -> None:
    """Emit into the current cog block (print outside cog, for trying things)."""
    try:
        import cog  # type: ignore[import-not-found]

        cog.out(text)
    except (ImportError, AttributeError):
        print(text, end="")


# ---- commands ---------------------------------------------------------------------------------

def commands() -> list[tuple[str, Any]]:
    """Every user-facing command as (``newswatch sub [sub]``, its click command), app order.

    Typer ships its own copy of click, so groups are recognised by ``list_commands``."""
    from pipeline.cli import app

    found: list[tuple[str, Any]] = []

    def walk(prefix: str, group: Any) -> None:
        context = group.context_class(group)
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            if command is None or command.hidden:
                continue
            found.append((f"{prefix} {name}", command))
            if hasattr(command, "list_commands"):
                walk(f"{prefix} {name}", command)

    walk("newswatch", typer.main.get_command(app))
    return found


def _usage(path: str, command: Any) -> str:
    arguments = [(p.metavar or p.name or "").upper() for p in command.params
                 if p.param_type_name == "argument"]
    options = [p.opts[0] for p in command.params
               if p.param_type_name == "option" and p.opts[0] not in ("--help", "--config")
               and not p.hidden]
    shown = " ".join(arguments + [f"[{o}]" for o in options])
    return f"{path} {shown}".strip()


def _summary(command: Any) -> str:
    text = (command.help or command.short_help or "").strip()
    return " ".join(text.split("\n\n")[0].split())


def cli_table() -> None:
    """The README's command table: usage (arguments and options) and the first help line."""
    lines = ["| command | what it does |", "|---|---|"]
    for path, command in commands():
        usage = _usage(path, command).replace("|", "\\|")
        lines.append(f"| `{usage}` | {_summary(command)} |")
    out("\n".join(lines) + "\n")


def help_text(path: str) -> str:
    """The ``--help`` output of one command, as a terminal 100 columns wide shows it."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, [*path.split()[1:], "--help"], terminal_width=100,
                                env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
    if result.exit_code != 0:
        raise RuntimeError(f"{path} --help failed: {result.output}")
    return "\n".join(line.rstrip() for line in result.output.splitlines()).strip() + "\n"


def cli_reference() -> None:
    """docs/cli.md: every command's ``--help``."""
    for path, _ in commands():
        out(f"\n## `{path}`\n\n```\n{help_text(path)}```\n")


# ---- settings ---------------------------------------------------------------------------------

def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, dict):
        return ", ".join(sorted(value)) or "`{}`"
    if value is None:
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{json.dumps(value)}`"
    if isinstance(value, str) and not value:
        return '`""`'
    return f"`{value}`"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The section model behind a field's type (a model, list[model] or dict[str, model])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def settings_rows() -> Iterator[tuple[str, str, str]]:
    """(key, default, meaning) for every setting, sections in model order."""
    from pipeline.settings import Settings

    def walk(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str]]:
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            key = f"{prefix}{name}"
            section = _model_of(field.annotation)
            meaning = " ".join((field.description or "").split())
            if section is None:
                yield key, _default(field), meaning
                continue
            origin = getattr(field.annotation, "__origin__", None)
            if origin is list:
                yield key, _default(field), meaning or (section.__doc__ or "").split("\n")[0]
                yield from walk(section, f"{key}[].")
            elif origin is dict:
                yield key, _default(field), meaning or (section.__doc__ or "").split("\n")[0]
                yield from walk(section, f"{key}.<name>.")
            else:
                yield from walk(section, f"{key}.")

    yield from walk(Settings, "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table() -> None:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in settings_rows():
        lines.append(f"| `{key}` | {_cell(default)} | {_cell(meaning)} |")
    out("\n".join(lines) + "\n")


# ---- layout -----------------------------------------------------------------------------------

def _first_sentence(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    sentence = re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0]
    return sentence.replace("``", "`")


def layout_entries() -> list[tuple[str, str]]:
    """(path, one line) for every module and package under the layout roots."""
    rows: list[tuple[str, str]] = []
    for root in LAYOUT_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO)
            if "versions" in rel.parts or path.name.startswith("test_"):
                continue
            shown = f"{rel.parent}/" if path.name == "__init__.py" else str(rel)
            rows.append((shown, _first_sentence(path)))
    return rows


def layout() -> None:
    width = max(len(p) for p, _ in layout_entries()) + 2
    body = "\n".join(f"{p:<{width}}{line}" for p, line in layout_entries())
    out(f"```\n{body}\n```\n")


# ---- benchmark figures --------------------------------------------------------------------------

def results(name: str) -> dict[str, Any]:
    return json.loads((REPO / "benchmarks" / "results" / f"{name}.json").read_text("utf-8"))


SHIPPED_EXTRACTION = "auto (trafilatura, then newspaper if <200 chars)"


def quality_rows() -> list[tuple[str, str, str, str]]:
    """(data, measure, figure, aim) for the quality benchmarks, from benchmarks/results/."""
    extraction = results("extraction")["results"][SHIPPED_EXTRACTION]
    stories = results("stories")
    ecb, uci, semeval = stories["ecbplus"], stories["uci_headlines"], stories["semeval"]
    relevance = results("relevance")
    cv, tag = relevance["cv"], relevance["tag_taiwan"]["cv"]
    second = results("relevance_second_reading")
    reader = second["reader_vs_file"]
    return [
        ("aeb-dev, 92 real news pages", "extraction F1 (P / R), shipped engine",
         f"{extraction['f1']:.3f} ({extraction['precision']:.3f} / {extraction['recall']:.3f})",
         ""),
        (f"ECB+ dev, {ecb['file_order']['articles']} articles, "
         f"{ecb['file_order']['events']} events", "stories BCubed F1, file order / mean of "
         f"{len(ecb['shuffled']) + 1} orders",
         f"{ecb['file_order']['bcubed']['f1']:.3f} / {ecb['bcubed_f1_mean_over_orders']:.3f}",
         "0.93"),
        ("ECB+ dev", "stories pairwise F1, file order",
         f"{ecb['file_order']['pairwise']['f1']:.3f}", ""),
        *([("ECB+ dev cut to title + first sentence (a feed item's length)",
            "stories BCubed F1 (P / R), file order",
            f"{lead['bcubed']['f1']:.3f} ({lead['bcubed']['p']:.3f} / "
            f"{lead['bcubed']['r']:.3f})", "")]
          if (lead := stories.get("ecbplus_lead")) else []),
        (f"UCI headlines dev, {uci['articles']:,} real feed headlines, {uci['events']} stories",
         "stories BCubed F1 (P / R)",
         f"{uci['bcubed']['f1']:.3f} ({uci['bcubed']['p']:.3f} / {uci['bcubed']['r']:.3f})",
         "0.90"),
        (f"SemEval-2022 pairs ({semeval['pairs']})", "rated 1 (same event) put together",
         f"{semeval['rated_1_together']:.0%} ({semeval['rated_1_count']} pairs)", "90%"),
        ("SemEval-2022 pairs", "rated 4 (different) kept apart",
         f"{semeval['rated_4_apart']:.0%} ({semeval['rated_4_count']} pairs)", "99%"),
        ("Taiwan developments 2007–11, 1,285 Guardian articles (135 D)",
         f"relevance to the taiwan watch, {cv['repeats']}×{cv['folds']}-fold CV: P / R / F1",
         f"{cv['precision']['mean']:.3f} / {cv['recall']['mean']:.3f} / "
         f"{cv['f1']['mean']:.3f}", "P 0.90, R 0.85"),
        ("the same articles, editors' Taiwan tag", "relevance CV: P / R / F1",
         f"{tag['precision']['mean']:.3f} / {tag['recall']['mean']:.3f} / "
         f"{tag['f1']['mean']:.3f}", ""),
        (f"the same articles read again: {second['articles_read']} drawn by kind, "
         f"{second['readings']} blind readings",
         "a careful reader against the file's labels, weighted to the file: P / R / F1 "
         "(F1 95 % interval)",
         f"{reader['precision']:.3f} / {reader['recall']:.3f} / {reader['f1']:.3f} "
         f"({second['reader_vs_file_95']['f1'][0]:.2f}–{second['reader_vs_file_95']['f1'][1]:.2f})",
         ""),
    ]


def quality_table() -> None:
    """The quality figures with the shipped defaults, as the results files hold them."""
    lines = ["| data | measure | newswatch | aim |", "|---|---|---|---|"]
    lines += [f"| {data} | {measure} | {figure} | {aim} |"
              for data, measure, figure, aim in quality_rows()]
    out("\n".join(lines) + "\n")
