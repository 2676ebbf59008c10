"""Which weights a run keeps (issue 13, defect 3): those of its best validation epoch, or its last.

The last epoch's weights are one draw from a noisy trajectory; the epoch with the best
validation accuracy (ties: lower validation loss) is chosen on the validation slice, never on
the test set. The run records which it kept (`TAG_KEPT`), and its registered model is that one.
"""
from __future__ import annotations

KEEP_CHOICES = ("best", "last")
TAG_KEPT = "vidistill.kept_weights"


class BestOnValidation:
    """The best epoch so far by (val_accuracy, -val_loss) and a CPU copy of its weights."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.epoch: int | None = state.get("best_epoch")
        self.score: tuple[float, float] | None = tuple(state["best_score"]) if state.get("best_score") else None
        self.weights: dict | None = state.get("best_model")

    def update(self, epoch: int, metrics: dict, model_state: dict) -> bool:
        score = (float(metrics["val_accuracy"]), -float(metrics["val_loss"]))
        if self.score is not None and score <= self.score:
            return False
        self.epoch, self.score = epoch, score
        self.weights = {k: v.detach().cpu().clone() for k, v in model_state.items()}
        return True

    def state(self) -> dict:
        return {"best_epoch": self.epoch, "best_score": list(self.score) if self.score else None,
                "best_model": self.weights}

    def metrics(self) -> dict:
        return {"best_epoch": self.epoch, "best_val_accuracy": self.score[0]} if self.score else {}


def kept_model_state(checkpoint: dict, keep: str) -> tuple[dict, str]:
    """(state dict, description) of the weights a checkpoint's run keeps."""
    if keep == "best" and checkpoint.get("best_model") is not None:
        return checkpoint["best_model"], f"best on validation: epoch {checkpoint['best_epoch'] + 1}"
    return checkpoint["model"], f"last: epoch {checkpoint['epoch'] + 1}"
