"""`vidistill datasets describe` for the detection layouts: instances per class and subset."""
from __future__ import annotations

import json

from vidistill.datasets.detection.annotations import describe_detection
from vidistill.datasets.layouts import DatasetConfig


def print_detection_description(config: DatasetConfig, as_json: bool = False, echo=print) -> None:
    description = describe_detection(config)
    if as_json:
        echo(json.dumps(description, indent=2))
        return
    subsets = description["subsets"]
    echo(f"{description['root']}  ({description['layout']}, {len(description['classes'])} classes, "
         "action instances per class)")
    width = max([len("class")] + [len(name) for name in description["classes"]])
    echo(f"  {'#':>4}  {'class':<{width}}" + "".join(f"  {s:>10}" for s in subsets))
    for index, name in enumerate(description["classes"]):
        echo(f"  {index:>4}  {name:<{width}}" + "".join(f"  {d['per_class'][name]:>10}" for d in subsets.values()))
    echo(f"  {'':>4}  {'instances':<{width}}" + "".join(f"  {d['instances']:>10}" for d in subsets.values()))
    echo(f"  {'':>4}  {'videos':<{width}}" + "".join(f"  {d['videos']:>10}" for d in subsets.values()))
    echo(f"  {'':>4}  {'on disk':<{width}}" + "".join(f"  {d['on_disk']:>10}" for d in subsets.values()))
    for subset, d in subsets.items():
        if d["note"]:
            echo(f"  {subset}: {d['note']}")
