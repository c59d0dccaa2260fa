"""The HTML reports of train, evaluate and predict, rendered from disk by a real browser (headless
Chromium, no network): loaded without console errors, their sections in the DOM, not blank."""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import imageio.v3 as iio
import numpy as np
import pytest

from attention_unet.cli import main

from .test_train import TINY

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (.ci/run installs the Debian package)")


@pytest.fixture(scope="module")
def reports(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reports")
    run = root / "run"
    assert main(["train", "--data", str(tiny_dataset), *TINY, "--epochs", "2", "--out", str(run)]) == 0
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run),
                "--data",
                str(tiny_dataset),
                "--split",
                "all",
                "--out",
                str(root / "eval"),
            ]
        )
        == 0
    )
    assert main(["predict", str(tiny_dataset / "images"), "--out", str(root / "pred"), "--model", str(run)]) == 0
    return {
        "train": run / "report.html",
        "evaluate": root / "eval" / "report.html",
        "predict": root / "pred" / "index.html",
    }


def render(page: Path, tmp_path: Path) -> tuple[str, np.ndarray, str]:
    """(the DOM after scripts ran, the screenshot, the browser's log) of a page opened from disk,
    with every network request but file:// refused."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1200,1400"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    shot = tmp_path / f"{page.stem}.png"
    log = subprocess.run(
        [*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    )
    return dom.stdout, iio.imread(shot), dom.stderr + log.stderr


@needs_browser
@pytest.mark.parametrize(
    ("name", "sections"),
    [
        ("train", ["Best validation F1", "<svg", "Split", "Config", "lr-Adam"]),
        (
            "evaluate",
            ["Summary", "Per modality", "Distribution over images", "worst images", "Every image", "strips/img0"],
        ),
        ("predict", ["nuclei, foreground", "most nuclei first", "_overlay.png"]),
    ],
)
def test_each_report_renders_in_a_real_browser(
    reports: dict[str, Path], tmp_path: Path, name: str, sections: list[str]
) -> None:
    dom, picture, log = render(reports[name], tmp_path)
    for section in sections:
        assert section in dom, section
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert picture.shape[0] > 100 and picture[..., :3].std() > 10  # not a blank page


def links(page: Path) -> list[str]:
    """Every src= and href= of a page as the browser resolves it: HTML-unescaped, then a relative
    URL's path (what a '#' or '?' starts is not part of it), percent-decoded; anchors and data as they are."""
    raw = [
        html.unescape(part[1 : part.index(part[0], 1)])
        for link in ("src=", "href=")
        for part in page.read_text().split(link)[1:]
    ]
    return [r if r.startswith(("#", "data:")) else unquote(urlsplit(r).path) for r in raw]


def test_reports_need_no_network(reports: dict[str, Path]) -> None:
    """Everything is inline or a relative file: no http(s) URL is fetched."""
    for page in reports.values():
        text = page.read_text()
        assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
        for target in links(page):
            assert target.startswith(("#", "data:")) or (page.parent / target).exists() or "svg" in target, target


def test_links_reach_files_whose_names_hold_url_characters(tiny_model: Path, tmp_path: Path) -> None:
    """'#' starts a URL's fragment and '%' an escape: a file 'well #1 50%.png' gave a broken thumbnail."""
    (tmp_path / "in").mkdir()
    for name in ("well #1 50%.png", "a&b?.png"):
        iio.imwrite(tmp_path / "in" / name, np.full((40, 40), 60, np.uint8))
    assert main(["predict", str(tmp_path / "in"), "--model", str(tiny_model), "--out", str(tmp_path / "out")]) == 0
    overlays = [t for t in links(tmp_path / "out" / "index.html") if t.endswith("_overlay.png")]
    assert sorted(set(overlays)) == ["a&b?_overlay.png", "well #1 50%_overlay.png"]
    assert all((tmp_path / "out" / t).is_file() for t in overlays)
