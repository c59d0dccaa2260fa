"""The command-line reference as Markdown, from the argparse parser itself (so it cannot miss a
flag): a section per command with its usage, description and a table of its options. mkdocs calls
:func:`on_page_markdown` (``hooks:`` in mkdocs.yml) to put it into docs/cli.md; tests/test_docs.py
checks that every flag is in it.

    python tools/cli_reference.py > cli.md
"""

from __future__ import annotations

import argparse

from attention_unet.cli import build_parser

MARKER = "<!-- cli-reference -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | meaning | default |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        if action.metavar and action.option_strings:
            names += f" `{action.metavar if isinstance(action.metavar, str) else ' '.join(action.metavar)}`"
        if action.choices:
            names += " {" + ", ".join(map(str, action.choices)) + "}"
        default = "" if action.default in (None, False, argparse.SUPPRESS) else f"`{action.default}`"
        rows.append(f"| {names} | {_cell(action.help or '')} | {_cell(default)} |")
    return rows


def reference() -> str:
    parser = build_parser()
    parts = ["## attention-unet", "", f"```\n{parser.format_usage().strip()}\n```", "", *option_rows(parser), ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts += [f"## {name}", "", sub.description or "", "", f"```\n{sub.format_usage().strip()}\n```", ""]
                parts += [*option_rows(sub), ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    """mkdocs hook: the reference where the page holds the marker."""
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown


if __name__ == "__main__":
    print(reference())
