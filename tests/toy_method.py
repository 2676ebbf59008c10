"""A toy distillation method, declared in this one file and nothing else.

Loaded through VIDISTILL_METHOD_MODULES=toy_method (the tests' folder is on the Ray head's
PYTHONPATH). It matches the student's logits to the flow teacher's with a squared error.
"""
import torch.nn.functional as F
from pydantic import Field

from vidistill.trainers.losses import LossTerms
from vidistill.trainers.methods import Method, register_method
from vidistill.trainers.schema import Schema


class ToyOptions(Schema):
    weight: float = Field(1.0, gt=0, description="weight of the logit regression")


def toy_loss(output, labels, teacher, config, options: ToyOptions) -> LossTerms:
    ce = F.cross_entropy(output.logits.float(), labels)
    mse = F.mse_loss(output.logits.float(), teacher.logits.float())
    return LossTerms(ce + options.weight * mse, {"ce": ce, "toy_logit_mse": mse})


TOY = register_method(Method(name="toy", summary="Logit regression onto the teacher's (a test plug-in).",
                             signals=("logits",), loss=toy_loss, options=ToyOptions))
