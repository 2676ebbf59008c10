"""Typed kind configs: the checks and CLI options every kind (the ML ones too) gets."""
from __future__ import annotations

import json
from typing import Literal

import pytest
from click.testing import CliRunner
from pydantic import Field

import vidistill.platform.kinds as kinds
from vidistill.platform.cli.main import cli
from vidistill.platform.kinds import ConfigError, JobKind, JobResources, register
from vidistill.platform.kinds.config import Schema, parse_config


class TrainLike(Schema):
    dataset: str = Field(description="prepared dataset folder")
    variant: Literal["flow", "rgb"] = Field("rgb", description="which stream")
    epochs: int = 10
    lr: float = 0.1
    augment: bool = True
    teacher: str | None = None
    splits: list[int] = Field(default_factory=lambda: [1])
    num_workers: int = 1

    def check(self):
        if self.variant == "rgb" and self.teacher is None and self.epochs > 100:
            raise ConfigError("epochs", "more than 100 epochs needs a teacher")


def test_parse_config_coerces_and_checks_every_field_type():
    config = parse_config(TrainLike, {"dataset": "ucf", "variant": "flow", "lr": 1, "augment": False,
                                      "teacher": "models:/t/1", "splits": [1, 2]})
    assert config == TrainLike(dataset="ucf", variant="flow", epochs=10, lr=1.0, augment=False,
                               teacher="models:/t/1", splits=[1, 2], num_workers=1)
    assert isinstance(config.lr, float)


@pytest.mark.parametrize("data, field_name, reason", [
    ({"dataset": "d", "variant": "depth"}, "variant", "must be one of 'flow', 'rgb', got 'depth'"),
    ({"dataset": "d", "epochs": 2.5}, "epochs", "must be an integer, got 2.5"),
    ({"dataset": "d", "epochs": True}, "epochs", "must be an integer, got True"),
    ({"dataset": "d", "augment": "yes"}, "augment", "must be true or false, got 'yes'"),
    ({"dataset": "d", "splits": [1, "two"]}, "splits[1]", "must be an integer, got 'two'"),
    ({"dataset": "d", "splits": 3}, "splits", "must be a list, got int 3"),
    ({"dataset": None}, "dataset", "must not be null"),
    ({"dataset": "d", "teacher": 5}, "teacher", "must be a string, got int 5"),
    ({"dataset": "d", "epochs": 500}, "epochs", "more than 100 epochs needs a teacher"),
])
def test_parse_config_names_the_field_and_the_reason(data, field_name, reason):
    with pytest.raises(ConfigError) as caught:
        parse_config(TrainLike, data)
    assert (caught.value.field, caught.value.reason) == (field_name, reason)


def test_job_resources_refuse_impossible_requests():
    with pytest.raises(ConfigError, match="num_workers: must be at least 1, got 0"):
        JobResources(0)
    with pytest.raises(ConfigError, match="fractions are allowed below 1 only"):
        JobResources(2, gpus_per_worker=1.5)
    assert JobResources(4, cpus_per_worker=2, gpus_per_worker=0.5).total_gpus == 2.0


def test_a_kind_declared_with_run_gets_cli_options_from_its_config(settings, monkeypatch):
    kinds.all_kinds()  # discover the built-in kinds first, so the copy below holds them
    monkeypatch.setattr(kinds, "_registry", dict(kinds._registry))  # forget the kind afterwards
    register(JobKind(
        name="train-like",
        summary="A training-shaped kind.",
        config_class=TrainLike,
        run=lambda config: None,
        resources=lambda c: JobResources(c.num_workers, cpus_per_worker=2, gpus_per_worker=1),
    ))
    for key, value in (("VIDISTILL_HOME", str(settings.home)), ("VIDISTILL_DB_URL", settings.db_url),
                       ("VIDISTILL_AUTOSTART_DISPATCHER", "0")):
        monkeypatch.setenv(key, value)
    runner = CliRunner()

    help_text = runner.invoke(cli, ["submit-job", "train-like", "--help"]).output
    for option in ("--dataset TEXT", "--variant [flow|rgb]", "--epochs INTEGER", "--augment / --no-augment",
                   "--splits INTEGER", "prepared dataset folder", "[required]"):
        assert option in help_text

    result = runner.invoke(cli, ["submit-job", "train-like", "--dataset", "ucf", "--variant", "flow",
                                 "--no-augment", "--splits", "1", "--splits", "3", "--num-workers", "2", "--json"])
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert job["config"] == {"dataset": "ucf", "variant": "flow", "epochs": 10, "lr": 0.1, "augment": False,
                             "teacher": None, "splits": [1, 3], "num_workers": 2}
    assert job["resources"]["total_gpus"] == 2.0  # what its workers ask, not its driver

    refused = runner.invoke(cli, ["submit-job", "train-like", "--dataset", "ucf", "--epochs", "500"])
    assert refused.exit_code == 2
    assert "invalid config for job kind 'train-like': field 'epochs': more than 100 epochs needs a teacher" \
        in refused.output
