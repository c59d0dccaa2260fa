"""Score auto scale's fragments rule (InferenceSettings.fragments_ratio / fragments_count /
fragments_solidity) against the median piece (the rule off), or with ``--ramp LOW HIGH`` its ramp
(full correction from those multiples of the learnt size on, ``Predictor.auto_full``) against the
old jump at the dead band's edges, or with ``--shrink-above A --shrink-margin M`` auto scale's
second, smaller pass (``Predictor.choose_factor``) against none, or with ``--by-confidence`` the
large pieces' size tried where the fragments rule is undecided (``fragments_by_confidence``, the
model's second look on both arms) against not, on a split part ('all': every image),
where it matters: images on which the two choose different factors are predicted at both and
scored (F1, DSB score); on the others the two predictions are the same image, so they add nothing
to the difference. Prints, per dataset and zoom, how many images changed and the change of the
mean scores over all the part's images. The shipped model on its default engine (int8 ONNX), or
``--model`` another on torch (e.g. a leave-source-out model on the source it never saw).

    python tools/size_check.py DATA... --split-file runs/nuclei-v4/split.json --part valid \
        --fragments-ratio 2 --fragments-count 30 --fragments-solidity 0.85 --zooms 1 3 0.4
    python tools/size_check.py DATA... --split-file runs/nuclei-v4/split.json --ramp 0.3333 6 --zooms 1 3 0.25
    python tools/size_check.py DATA... --shrink-above 1.5 --shrink-margin 0.01 --zooms 1 2
    python tools/size_check.py DATA... --by-confidence --zooms 1 2 3

Without ``--split-file`` each dataset's default split (``data.default_split``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from size_probe import zoomed_record  # this folder's: the same zooms, capped the same way

from attention_unet import data, metrics
from attention_unet.predict import load_predictor
from attention_unet.tiling import Predictor


def chosen_factor(
    predictor: Predictor, image: np.ndarray, value_range: tuple[float, float], probe: tuple[np.ndarray, float]
) -> tuple[float, float | None]:
    """(the factor, the diameter it stands for) that auto scale predicts the image at, from the
    probe's instances (``Predictor.probe_labels``): with the second passes of ``choose_factor``
    where its settings ask for them."""
    diameter, large = predictor.probe_diameters(*probe)
    return predictor.chosen_size(image, value_range, predictor.factor_of(diameter), diameter, large)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--split-file", help="default: each dataset's default split")
    parser.add_argument("--part", default="valid")
    parser.add_argument("--fragments-ratio", type=float)
    parser.add_argument("--fragments-count", type=int)
    parser.add_argument("--fragments-solidity", type=float)
    parser.add_argument("--ramp", type=float, nargs=2, metavar=("LOW", "HIGH"), help="the ramp against the jump")
    parser.add_argument("--shrink-above", type=float, help="the second pass against none (needs --shrink-margin)")
    parser.add_argument("--shrink-margin", type=float)
    parser.add_argument("--by-confidence", action="store_true", help="fragments_by_confidence against not")
    parser.add_argument("--zooms", type=float, nargs="+", default=[1.0])
    parser.add_argument("--model", help="another model (torch engine; default: the shipped one, int8)")
    args = parser.parse_args()
    predictor = load_predictor(args.model, engine="torch" if args.model else "auto", scale="auto")
    # each rule is compared without the ones that came after it, on both arms
    predictor = dataclasses.replace(predictor, fragments_by_confidence=False)
    if args.shrink_above is None and not args.by_confidence:
        predictor = dataclasses.replace(predictor, shrink_above=0.0)
    if args.by_confidence:
        shipped, fitted = predictor, dataclasses.replace(predictor, fragments_by_confidence=True)
    elif args.shrink_above is not None:
        if args.shrink_margin is None:
            parser.error("--shrink-above needs --shrink-margin")
        shipped = dataclasses.replace(predictor, shrink_above=0.0)
        fitted = dataclasses.replace(predictor, shrink_above=args.shrink_above, shrink_margin=args.shrink_margin)
    elif args.ramp:  # the model's own fragments rule; the jump is a ramp that ends where it starts
        shipped = dataclasses.replace(predictor, auto_full=predictor.auto_range)
        fitted = dataclasses.replace(predictor, auto_full=tuple(args.ramp))
    elif None in (args.fragments_ratio, args.fragments_count, args.fragments_solidity):
        parser.error("give --fragments-ratio, --fragments-count and --fragments-solidity, or --ramp")
    else:
        shipped = dataclasses.replace(predictor, fragments_ratio=0.0)  # the median
        fitted = dataclasses.replace(
            shipped,
            fragments_ratio=args.fragments_ratio,
            fragments_count=args.fragments_count,
            fragments_solidity=args.fragments_solidity,
        )
    for path in args.data:
        records = data.load_records(path)
        split = (
            data.load_split(args.split_file, path) if args.split_file else data.default_split([r.id for r in records])
        )
        records = data.select(records, split, args.part)
        for zoom in args.zooms:
            changed, deltas = [], np.zeros(2)
            for record in records:
                im, lab, _ = zoomed_record(record, zoom)
                value_range = data.normalisation_range(im, shipped.norm)
                probe = shipped.probe_labels(im, value_range, shipped.probe)  # one probe for both
                factors, diameters = zip(*(chosen_factor(p, im, value_range, probe) for p in (shipped, fitted)))
                if abs(factors[0] - factors[1]) < 1e-3:
                    continue
                scores = []
                for factor, diameter in zip(factors, diameters):
                    probs = shipped.predicted_at(im, value_range, factor, diameter)[0]
                    pixel = metrics.pixel_scores(probs[0] > 0.5, lab > 0)
                    objects = metrics.object_scores(lab, shipped.labels(probs))
                    scores.append((pixel["f1"], objects["dsb_score"]))
                deltas += np.subtract(scores[1], scores[0])
                changed.append(
                    f"{record.id[:12]} x{factors[0]:.2f}->{factors[1]:.2f} F1 {scores[0][0]:.3f}->{scores[1][0]:.3f}"
                )
            n = len(records)
            print(
                f"{Path(path).stem} zoom {zoom:g}: {len(changed)}/{n} changed; mean F1 {deltas[0] / n:+.4f}, "
                f"DSB score {deltas[1] / n:+.4f}",
                flush=True,
            )
            for line in changed:
                print("   ", line, flush=True)


if __name__ == "__main__":
    main()
