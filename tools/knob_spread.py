"""In how many source files each inference setting's name appears (#35's "one place per knob").

Two counts per setting: ``word``, files where the name appears as a word at all (short names such
as ``h`` and ``scale`` also match unrelated words), and ``setting``, files where it appears the
way a setting is used: as an attribute (``settings.h``), a keyword (``h=``), a quoted key
(``"h"``) or a flag (``--min-confidence``).

    python tools/knob_spread.py [--verbose]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from attention_unet.settings import InferenceSettings

SRC = Path(__file__).resolve().parents[1] / "src" / "attention_unet"


def spread(name: str, texts: dict[str, str]) -> tuple[list[str], list[str]]:
    word = re.compile(rf"\b{name}\b")
    flag = "--" + name.replace("_", "-")
    used = re.compile(rf"\.{name}\b|\b{name}\s*=[^=]|[\"']{name}[\"']|{re.escape(flag)}\b")
    return sorted(f for f, t in texts.items() if word.search(t)), sorted(f for f, t in texts.items() if used.search(t))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="list the files of each setting")
    args = parser.parse_args()
    texts = {str(p.relative_to(SRC)): p.read_text() for p in sorted(SRC.rglob("*.py"))}
    names = [f.name for f in dataclasses.fields(InferenceSettings)]
    totals = [0, 0]
    for name in names:
        words, used = spread(name, texts)
        totals[0] += len(words)
        totals[1] += len(used)
        print(f"{name:24s} word {len(words):2d}  setting {len(used):2d}" + (f"  {used}" if args.verbose else ""))
    print(f"mean over {len(names)} settings: word {totals[0] / len(names):.2f}, setting {totals[1] / len(names):.2f}")


if __name__ == "__main__":
    main()
