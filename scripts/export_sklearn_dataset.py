"""Export one of sklearn's bundled datasets to a train/test CSV pair.

The example project's data was made with:
    python scripts/export_sklearn_dataset.py digits fixtures/example/data
Bundled datasets load offline; the split is stratified and seeded so it is reproducible.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from sklearn import datasets
from sklearn.model_selection import train_test_split

LOADERS = {
    "digits": datasets.load_digits,
    "breast_cancer": datasets.load_breast_cancer,
    "wine": datasets.load_wine,
    "iris": datasets.load_iris,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(LOADERS))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    bunch = LOADERS[args.name]()
    x, y = bunch.data, bunch.target
    if args.name == "digits":
        names = [f"px{i}" for i in range(x.shape[1])]
    else:
        names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=args.test_size, random_state=args.seed, stratify=y
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split, xs, ys in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        with open(args.out_dir / f"{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([*names, "label"])
            for row, label in zip(xs, ys, strict=True):
                writer.writerow([*(f"{v:g}" for v in row), int(label)])


if __name__ == "__main__":
    main()
