"""In how many source files each inference setting's name appears (#35's "one place per knob").

Two counts per setting, over the code only (comments and docstrings are prose, not uses):
``word``, files where the name appears as a word at all (short names such as ``h`` and ``scale``
also match unrelated words: napari's layer scale, training's zoom range), and ``setting``, files
where it appears the way a setting is used: as an attribute (``settings.h``), a keyword (``h=``), a
quoted key (``"h"``) or a flag (``--min-confidence``); and that, less the files where the name
means something else (HOMONYMS, each with what it is there).

    python tools/knob_spread.py [--verbose]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import re
import tokenize
from pathlib import Path

from attention_unet.settings import InferenceSettings

SRC = Path(__file__).resolve().parents[1] / "src" / "attention_unet"


def code_only(text: str) -> str:
    """The source's tokens without its comments and docstrings (strings that stand as statements)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    kept, previous = [], tokenize.NEWLINE
    for token in tokens:
        prose = token.type == tokenize.COMMENT or (
            token.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
        )
        if not prose:
            kept.append(token.string)
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            previous = token.type
    return " ".join(kept)


def spread(name: str, texts: dict[str, str]) -> tuple[list[str], list[str]]:
    word = re.compile(rf"\b{name}\b")
    flag = "--" + name.replace("_", "-")
    used = re.compile(rf"\.\s*{name}\b|\b{name}\s*=[^=]|[\"']{name}[\"']|{re.escape(flag)}\b")
    return sorted(f for f, t in texts.items() if word.search(t)), sorted(f for f, t in texts.items() if used.search(t))


# files where a setting's name means something else, read and listed here by hand (the third count
# leaves them out): (setting, file or folder) -> what the name is there
HOMONYMS = {
    ("scale", "napari_plugin/"): "napari's layer scale (µm per pixel)",
    ("scale", "training/"): "training's zoom range (--scale LOW HIGH), BatchNorm's scale",
    ("scale", "inference/blockwise.py"): "OME-Zarr's scale transform",
    ("h", "io/data.py"): "a hash object and an image height",
}


def homonym(name: str, file: str) -> bool:
    return any(name == n and file.startswith(where) for n, where in HOMONYMS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="list the files of each setting")
    args = parser.parse_args()
    texts = {str(p.relative_to(SRC)): code_only(p.read_text()) for p in sorted(SRC.rglob("*.py"))}
    names = [f.name for f in dataclasses.fields(InferenceSettings)]
    totals = [0, 0, 0]
    for name in names:
        words, used = spread(name, texts)
        own = [f for f in used if not homonym(name, f)]
        for k, found in enumerate((words, used, own)):
            totals[k] += len(found)
        line = f"{name:24s} word {len(words):2d}  setting {len(used):2d}  homonyms apart {len(own):2d}"
        print(line + (f"  {own}" if args.verbose else ""))
    means = [f"{t / len(names):.2f}" for t in totals]
    print(f"mean over {len(names)} settings: word {means[0]}, setting {means[1]}, homonyms apart {means[2]}")


if __name__ == "__main__":
    main()
