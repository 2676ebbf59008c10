"""Prob-Distill (Eq. 8): the student's motion map learns the flow teacher's, its appearance map the uniform prior."""
from vidistill.trainers.losses import attention_distillation_loss
from vidistill.trainers.methods import Method, register_method


def loss(output, labels, teacher, config, options):
    return attention_distillation_loss(output, labels, teacher, config.distill.lambda1, config.distill.lambda2)


ATTENTION = register_method(Method(
    name="attention",
    summary="Prob-Distill (Eq. 8): sum_t KL between the student's motion map and the flow teacher's.",
    signals=("maps",),
    loss=loss,
    student="attention",
    map_cache=True,  # maps depend only on the clip: its exact map, looked up in the teacher bank
    registered_suffix="",  # the method of the paper: <data>-student-rgb
))
