"""Paired differences between methods of one or two `pudnet eval --frontier` runs on the same groups.

    python benchmarks/experiments/frontier_pairs.py RUN_DIR [OTHER_RUN_DIR] \\
        --pairs pudnet_forward-pretrained,pudnet_forward-pretrained_10steps

A pair A-B is a method of RUN_DIR minus a method of RUN_DIR; with OTHER_RUN_DIR, `other:NAME` names a method of
that run (e.g. pudnet_forward-other:pudnet_forward: this checkpoint's forward pass minus the other's), paired
over the groups both runs finished (same seed, so the same groups). Points, mean ± 95% CI.
"""
import argparse
import json
from pathlib import Path

from pudnet.evaluate import mean_ci

DEFAULT_PAIRS = ("pudnet_forward-pretrained,pudnet_forward-pretrained_3steps,pudnet_forward-pretrained_10steps,"
                 "pudnet_3steps-pretrained_3steps,pudnet_10steps-pretrained_10steps")


def scores(run: Path) -> dict[int, dict[str, float]]:
    rows = (json.loads(line) for line in (run / "groups.jsonl").read_text().splitlines() if line.strip())
    return {row["group"]: row["scores"] for row in rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("other", type=Path, nargs="?")
    parser.add_argument("--pairs", default=DEFAULT_PAIRS)
    args = parser.parse_args()
    runs = {"": scores(args.run)} | ({"other:": scores(args.other)} if args.other else {})
    groups = sorted(set.intersection(*(set(r) for r in runs.values())))

    def values(name: str) -> list[float]:
        prefix = "other:" if name.startswith("other:") else ""
        return [100 * runs[prefix][g][name.removeprefix(prefix)] for g in groups]

    for pair in args.pairs.split(","):
        a, b = pair.split("-", 1)
        mean, ci = mean_ci([x - y for x, y in zip(values(a), values(b))])
        print(json.dumps({"pair": pair, "groups": len(groups), "mean": round(mean, 2), "ci95": round(ci, 2)}))


if __name__ == "__main__":
    main()
