"""The shipped models, by name. Each is a folder under ``weights/`` (the default model is
``weights/`` itself) holding ``model.safetensors`` whose metadata carries a ``card``: its name,
modality, licence, training data and whom to credit. A model without a licence is refused: the
package is MIT, but weights trained on non-commercial data are not (README, "Licences")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

WEIGHTS = Path(__file__).parents[1] / "weights"
DEFAULT = "nuclei"
CARD_KEYS = ("name", "modality", "licence", "trained_on")


@dataclass(frozen=True)
class Entry:
    """One shipped model: where its weights are and what its card says."""

    name: str
    weights: Path
    modality: str
    licence: str
    trained_on: str
    credit: str = ""
    route: tuple[str, ...] = ()  # the kinds of image (data.modality) --model auto sends to it

    @property
    def size_mb(self) -> float:
        return self.weights.stat().st_size / 1e6


def _entry(weights: Path) -> Entry:
    from .files import read_model_info

    card = read_model_info(weights).get("card") or {}
    missing = [k for k in CARD_KEYS if not card.get(k)]
    if missing:
        raise InputError(f"{weights}: a shipped model needs {', '.join(missing)} in its card; refusing it")
    route = tuple(card.get("route") or ())
    return Entry(weights=weights, credit=card.get("credit", ""), route=route, **{k: str(card[k]) for k in CARD_KEYS})


def entries() -> dict[str, Entry]:
    """Every shipped model by name, the default first."""
    folders = [WEIGHTS, *sorted(p for p in WEIGHTS.iterdir() if p.is_dir())]
    found = [_entry(f / "model.safetensors") for f in folders if (f / "model.safetensors").is_file()]
    return {e.name: e for e in found}


def routes() -> dict[str, str]:
    """Image kind -> the shipped model ``--model auto`` sends it to (kinds no card claims: DEFAULT)."""
    return {kind: e.name for e in entries().values() for kind in e.route}


def is_name(model: str | Path | None) -> bool:
    """Whether ``model`` is meant as a zoo name (no path separator, no suffix, not a path here)."""
    text = str(model)
    return model is not None and not Path(text).exists() and "/" not in text and not Path(text).suffix


def resolve(model: str | Path | None) -> Path | None:
    """A model argument as a path: a zoo name becomes its weights file; None (the default model)
    and paths pass through. An unknown name lists the known ones."""
    if not is_name(model):
        return None if model is None else Path(model)
    known = entries()
    if str(model) not in known:
        raise InputError(f"model {model}: no such model file or shipped model (shipped: {', '.join(known)})", "model")
    return known[str(model)].weights


def table() -> str:
    """``attention-unet models``: one line per shipped model."""
    rows = [("name", "modality", "size", "licence", "trained on")]
    rows += [(e.name, e.modality, f"{e.size_mb:.1f} MB", e.licence, e.trained_on) for e in entries().values()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)


def licence_notes(names: set[str]) -> list[str]:
    """One line per shipped model among ``names`` (a run's models): its licence, once per run."""
    known = entries()
    return [
        f"model {n}: licence {known[n].licence}" + (f"; credit {known[n].credit}" if known[n].credit else "")
        for n in sorted(names)
        if n in known
    ]
