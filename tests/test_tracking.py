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
