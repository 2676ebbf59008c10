"""Evaluate registered detectors on the test videos they name; one table, one MLflow run."""
from __future__ import annotations

from vidistill.trainers.detection.train import evaluate_detector, load_detection_data, load_detector


def evaluate_detectors(uris: list[str], protocol: str = "thumos14", device: str = "cpu",
                       experiment: str = "vidistill-detection") -> tuple[dict, str]:
    """{uri: {"streams", "protocol", "thresholds", "map", "average"} or {"frame_map"}}, and the MLflow run id."""
    from vidistill.trainers import tracking

    table = {}
    for uri in uris:
        model, data = load_detector(uri, device)
        test = load_detection_data(data["root"], data["layout"], data["features"], data["test_subset"],
                                   data.get("annotations"))
        result = evaluate_detector(model, test, protocol, device)
        row = {"streams": test.streams}
        row.update(result["segment"].to_dict() if "segment" in result else {"frame_map": result["frame_map"]})
        table[uri] = row
    client = tracking.configure()
    run = client.create_run(tracking.experiment_id(client, experiment), run_name="evaluate-detectors",
                            tags={tracking.TAG_ROLE: "evaluation", tracking.TAG_CODE: tracking.code_version()})
    client.log_param(run.info.run_id, "protocol", protocol)
    for index, (uri, row) in enumerate(table.items()):
        client.log_param(run.info.run_id, f"model_{index}", uri)
        for threshold, value in row.get("map", {}).items():
            client.log_metric(run.info.run_id, f"m{index}_mAP_at_{threshold}", value)
        client.log_metric(run.info.run_id, f"m{index}_mAP_avg", row.get("average", row.get("frame_map", 0.0)))
    client.log_dict(run.info.run_id, table, "detection_table.json")
    client.set_terminated(run.info.run_id)
    return table, run.info.run_id


def format_table(table: dict) -> str:
    """mAP per tIoU threshold (and the average) of each model, as text."""
    from prettytable import PrettyTable

    rows = list(table.items())
    thresholds = next((r["map"].keys() for _, r in rows if "map" in r), [])
    out = PrettyTable(["model", "streams", *[f"mAP@{t}" for t in thresholds], "avg"])
    for uri, row in rows:
        values = [f"{row['map'][t]:.3f}" for t in thresholds] if "map" in row else ["-"] * len(thresholds)
        out.add_row([uri, row["streams"], *values, f"{row.get('average', row.get('frame_map', 0.0)):.3f}"])
    protocol = next((r["protocol"] for _, r in rows if "protocol" in r), "frame mAP")
    return f"protocol: {protocol}\n{out}"
