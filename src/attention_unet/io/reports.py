"""Static HTML reports that open from disk with no server and no network: ``evaluate``'s
report.html, ``predict``'s index.html and a training run's report.html (refreshed each epoch).

Everything is inline (CSS, matplotlib's SVG plots, a few lines of script that sort tables and
grids); pictures are the PNG files the commands already write, linked by relative paths, so a
report folder can be copied or zipped whole.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
td:first-child, th:first-child { text-align: left; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.card { width: 210px; font-size: 0.8em; border: 1px solid #ddd; padding: 4px; overflow-wrap: anywhere; }
.card img { width: 200px; height: 200px; object-fit: contain; background: #000; }
.strip img { max-width: 100%; border: 1px solid #ccc; }
code, pre { background: #f6f6f6; }
"""

# Sorting: click a table header to sort by that column (numbers as numbers); a grid sorts its
# cards by a data attribute from the buttons above it.
SCRIPT = """
function sortTable(th) {
  const table = th.closest('table'), body = table.tBodies[0], k = th.cellIndex;
  const down = th.dataset.order !== 'desc'; th.dataset.order = down ? 'desc' : 'asc';
  const key = r => { const t = r.cells[k].dataset.value ?? r.cells[k].textContent; const n = parseFloat(t); return isNaN(n) ? t : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (down ? -1 : 1); })
    .forEach(r => body.appendChild(r));
}
function sortGrid(id, attr, down) {
  const grid = document.getElementById(id);
  [...grid.children].sort((a, b) => (parseFloat(a.dataset[attr]) - parseFloat(b.dataset[attr])) * (down ? -1 : 1))
    .forEach(c => grid.appendChild(c));
}
"""


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head>\n<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def url(path: str) -> str:
    """A relative file path as an HTML attribute: percent-encoded (a '#' or '%' in a file name
    would otherwise cut or garble the link), then HTML-escaped.

    >>> url("well #1 50%.png")
    'well%20%231%2050%25.png'
    """
    return html.escape(quote(path, errors="surrogateescape"))  # a file name that is not UTF-8: its bytes, %-escaped


def table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], sortable: bool = True, row_ids: Sequence[str] | None = None
) -> str:
    """An HTML table; numbers to 3 decimals; cells that are (text, href) pairs become links."""
    click = ' onclick="sortTable(this)"' if sortable else ""
    head = "".join(f"<th{click}>{html.escape(str(c))}</th>" for c in columns)
    lines = []
    for k, row in enumerate(rows):
        cells = []
        for value in row:
            if isinstance(value, tuple):
                text, href = value
                cells.append(f'<td><a href="{url(href)}">{html.escape(str(text))}</a></td>')
            elif isinstance(value, float):
                cells.append(f'<td data-value="{value!r}">{value:.3f}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        anchor = f' id="{html.escape(row_ids[k])}"' if row_ids else ""
        lines.append(f"<tr{anchor}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(lines) + "\n</tbody></table>"


def svg(figure: Any) -> str:
    """A matplotlib figure as inline SVG (closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    if "<metadata>" in text:  # an RDF block with a date: not needed, and it names URLs
        text = text[: text.index("<metadata>")] + text[text.index("</metadata>") + len("</metadata>") :]
    return text


def _figure(width: float = 5.0, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def write(path: Path, text: str) -> Path:
    """Write whole or not at all (temporary name, then rename)."""
    temporary = path.with_name(f".partial-{os.getpid()}-{path.name}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


# ------------------------------------------------------------------------------------- evaluate


def evaluate_report(summary: dict[str, Any], rows: list[dict[str, Any]], strips: bool, worst: int = 8) -> str:
    """The text of evaluate's ``report.html``: the summary and per-modality tables, histograms of
    per-image F1 and DSB score, the ``worst`` images by DSB score as image | truth | prediction
    strips, and a sortable per-image table linking to each strip."""
    metrics_shown = [k for k in summary if isinstance(summary[k], float)]
    parts = [
        f"<p>{html.escape(str(summary.get('data', '')))}: {summary['n_images']} images, protocol {html.escape(summary['protocol'])}, mean per image.</p>",
        "<h2>Summary</h2>",
        table(["metric", "value"], [[k, float(summary[k])] for k in metrics_shown], sortable=False),
        "<h2>Per modality</h2>",
        table(
            ["modality", "images", "F1", "Jaccard", "DSB score"],
            [
                [kind, v["n_images"], v["f1"], v["jaccard"], v["dsb_score"]]
                for kind, v in summary.get("by_modality", {}).items()
            ],
        ),
        "<h2>Distribution over images</h2><div class='figures'>",
    ]
    for key, label in (("f1", "F1 (pixels)"), ("dsb_score", "DSB score (instances)")):
        fig, ax = _figure()
        ax.hist([r[key] for r in rows], bins=20, range=(0, 1), color="#4477aa")
        ax.set_xlabel(label)
        ax.set_ylabel("images")
        parts.append(f"<div>{svg(fig)}</div>")
    parts.append("</div>")
    ranked = sorted(rows, key=lambda r: r["dsb_score"])[:worst]
    parts.append(f"<h2>The {len(ranked)} worst images (by DSB score)</h2>")
    for r in ranked:
        caption = f"{r['id']}: F1 {r['f1']:.3f}, DSB score {r['dsb_score']:.3f}, {r['modality']}"
        image = f'<img src="{url("strips/" + r["id"] + ".png")}" alt="{html.escape(r["id"])}">' if strips else ""
        parts.append(f'<div class="strip"><p>{html.escape(caption)} (image | truth | prediction)</p>{image}</div>')
    columns = [
        "id",
        "modality",
        "height",
        "width",
        "f1",
        "jaccard",
        "recall",
        "precision",
        "dsb_score",
        "f1d",
        "aji",
        "pq",
    ]
    parts.append("<h2>Every image (click a column to sort)</h2>")
    parts.append(
        table(
            columns,
            [[(r["id"], f"strips/{r['id']}.png") if strips else r["id"], *[r[c] for c in columns[1:]]] for r in rows],
            row_ids=[f"image-{r['id']}" for r in rows],
        )
    )
    return page("attention-unet evaluate", "\n".join(parts))


# -------------------------------------------------------------------------------------- predict


def _number(value: Any) -> float:
    """A summary cell as a number (a summary.csv read back may hold anything: NaN where it is not one).

    >>> _number("12"), _number("<script>")
    (12.0, nan)
    """
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def predict_index(out: Path, rows: list[dict[str, Any]], failed: dict[str, str] | None = None) -> str:
    """The text of ``out/index.html``: a thumbnail of every image with its outlines, nucleus count and
    foreground fraction, sortable by count; each thumbnail links to the full overlay. ``failed``
    (input: why) are listed first, so that nobody reads the page as the whole batch."""
    cards = []
    for row in rows:
        stem = row["file"]
        overlay = f"{stem}_overlay.png"
        plane = f" plane {row['plane']}" if row.get("plane", "") != "" else ""
        picture = (
            f'<a href="{url(overlay)}"><img src="{url(overlay)}" alt="{html.escape(stem)}" loading="lazy"></a>'
            if (out / overlay).is_file()
            else '<div class="stack">stack: see the labels TIFF</div>'
        )
        count, fraction = _number(row["nucleus_count"]), _number(row["foreground_fraction"])
        cards.append(
            f'<div class="card" data-count="{count:g}" data-fraction="{fraction:g}">{picture}'
            f"<br><b>{html.escape(stem)}{html.escape(plane)}</b><br>{count:g} nuclei, foreground {fraction:.3f}</div>"
        )
    buttons = (
        "<p>Sort: <button onclick=\"sortGrid('grid', 'count', true)\">most nuclei first</button> "
        "<button onclick=\"sortGrid('grid', 'count', false)\">fewest first</button> "
        "<button onclick=\"sortGrid('grid', 'fraction', true)\">most foreground first</button></p>"
    )
    failures = (
        f"<h2>Not segmented: {len(failed)} file(s)</h2>"
        + table(["file", "why"], [[path, why] for path, why in failed.items()], sortable=False)
        if failed
        else ""
    )
    body = (
        f"{failures}<p>{len(rows)} image(s); summary.csv has the numbers.</p>{buttons}<div class='grid' id='grid'>\n"
        + "\n".join(cards)
        + "\n</div>"
    )
    return page("attention-unet predict", body)


# ---------------------------------------------------------------------------------------- train


def train_report(run_dir: Path) -> Path:
    """``run_dir/report.html``: loss and validation F1/IoU against epochs and minutes, the learning
    rate, the best epoch, the split sizes and the resolved config."""
    log = run_dir / "metrics.csv"
    rows = list(csv.DictReader(log.open())) if log.is_file() else []

    def series(key: str, x: str = "epoch") -> tuple[list[float], list[float]]:
        pairs = [
            (float(r[x]), float(r[key])) for r in rows if r.get(key) not in (None, "") and r.get(x) not in (None, "")
        ]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    minutes = {r["epoch"]: r["minutes"] for r in rows if r.get("minutes")}
    for r in rows:  # the minutes are logged with validation; give the epoch's other rows them too
        r.setdefault("minutes", "")
        r["minutes"] = r["minutes"] or minutes.get(r.get("epoch", ""), "")
    parts = ["<div class='figures'>"]
    for x, xlabel in (("epoch", "epoch"), ("minutes", "minutes")):
        for keys, ylabel in ((("train_loss_epoch", "val_loss"), "loss"), (("val_f1", "val_iou"), "validation score")):
            fig, ax = _figure()
            for key in keys:
                xs, ys = series(key, x)
                if xs:
                    ax.plot(xs, ys, marker="o", ms=3, label=key)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.legend()
            parts.append(f"<div>{svg(fig)}</div>")
    lr_key = next((k for k in (rows[0] if rows else {}) if k.startswith("lr-")), None)
    if lr_key:
        fig, ax = _figure()
        xs, ys = series(lr_key, "step")  # logged at each epoch's start, on a row of its own without the epoch
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_xlabel("step")
        ax.set_ylabel(lr_key)
        ax.set_yscale("log")
        parts.append(f"<div>{svg(fig)}</div>")
    parts.append("</div>")
    f1_epochs = [(float(r["val_f1"]), int(float(r["epoch"]))) for r in rows if r.get("val_f1")]
    if f1_epochs:
        best, epoch = max(f1_epochs)
        parts.insert(0, f"<p>Best validation F1 {best:.3f} at epoch {epoch}; {len(f1_epochs)} epoch(s) validated.</p>")
    split = run_dir / "split.json"
    if split.is_file():
        parts.append(
            "<h2>Split</h2>"
            + table(["dataset", "train", "valid", "test"], _split_sizes(json.loads(split.read_text())), sortable=False)
        )
    config = run_dir / "config.yaml"
    if config.is_file():
        parts.append(f"<h2>Config</h2><pre>{html.escape(config.read_text())}</pre>")
    return write(run_dir / "report.html", page(f"attention-unet train: {run_dir.name}", "\n".join(parts)))


def _split_sizes(split: dict[str, Any]) -> list[list[Any]]:
    if {"train", "valid", "test"} <= set(split):
        return [["(one dataset)", *(len(split[k]) for k in ("train", "valid", "test"))]]
    return [[name, *(len(part.get(k, [])) for k in ("train", "valid", "test"))] for name, part in split.items()]
