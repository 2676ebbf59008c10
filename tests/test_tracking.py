"""MLflow stores: a client reads the store it is given, whatever an earlier configure() chose."""
from __future__ import annotations

from platform_fixtures import environment
from vidistill.trainers import tracking


def test_a_store_client_reads_registry_aliases_from_its_own_store_after_configure_chose_another(tmp_path):
    # A long-lived process (the test suite, a notebook) configured one home's store, then reads
    # another's: the registry must come from the store asked for (issue: "alias job-1 not found").
    with environment(VIDISTILL_HOME=str(tmp_path / "first"), MLFLOW_TRACKING_URI=None):
        tracking.configure().create_registered_model("tiny-teacher-flow")
    second = f"sqlite:///{tmp_path / 'second.db'}"
    with environment(VIDISTILL_HOME=str(tmp_path / "first"), MLFLOW_TRACKING_URI=second):
        tracking.configure()  # creates the second store's schema
    with environment(VIDISTILL_HOME=str(tmp_path / "first"), MLFLOW_TRACKING_URI=None):
        tracking.configure()  # this process's global registry: the first store again
    client = tracking.store_client(second)
    assert client.search_registered_models() == []
    client.create_registered_model("tiny-teacher-flow")
    client.set_registered_model_tag("tiny-teacher-flow", "store", "second")
    assert client.get_registered_model("tiny-teacher-flow").tags == {"store": "second"}
    assert tracking.store_client(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}").get_registered_model(
        "tiny-teacher-flow").tags == {}


def test_logging_a_model_to_a_run_keeps_the_status_the_run_ended_with(tmp_path):
    # Tune registers the best trial's weights after the search; a trial ASHA stopped must stay
    # KILLED, and a run still training must stay RUNNING (train() ends it after registering).
    import torch

    with environment(VIDISTILL_HOME=str(tmp_path), MLFLOW_TRACKING_URI=None):
        client = tracking.configure()
        experiment = tracking.experiment_id(client, "status")
        stopped = client.create_run(experiment).info.run_id
        client.set_terminated(stopped, status="KILLED", end_time=1_000)
        training = client.create_run(experiment).info.run_id
        for run_id in (stopped, training):
            assert tracking.log_model(run_id, torch.nn.Linear(2, 1)).startswith("models:/")
        assert client.get_run(stopped).info.status == "KILLED"
        assert client.get_run(stopped).info.end_time == 1_000
        assert client.get_run(training).info.status == "RUNNING"
