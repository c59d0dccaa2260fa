"""The docs stay true to the code: the command-line reference names every flag of every command,
and the README and model cards stay short."""

import argparse
import importlib.util
from pathlib import Path

from attention_unet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def cli_reference() -> str:
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.on_page_markdown((ROOT / "docs" / "cli.md").read_text())


def flags(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    found = {"attention-unet": [s for a in parser._actions for s in a.option_strings]}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = [s for a in sub._actions for s in a.option_strings]
    return found


def test_cli_reference_names_every_flag_of_every_command() -> None:
    page = cli_reference()
    sections = {s.split("\n", 1)[0].strip(): s for s in page.split("\n## ")[1:]}
    for command, options in flags(build_parser()).items():
        assert command in sections, f"no section for {command}"
        missing = [o for o in options if f"`{o}`" not in sections[command] and o not in ("-h", "--help")]
        assert not missing, f"{command}: {missing} missing from the CLI reference"


def test_readme_and_model_cards_stay_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
    for card in (ROOT / "docs" / "models").glob("*.md"):
        assert len(card.read_text().splitlines()) <= 200, card.name
