"""Logit distillation (Hinton et al. 2015): softened teacher logits as targets."""
from vidistill.trainers.losses import logit_distillation_loss
from vidistill.trainers.methods import Method, register_method


def loss(output, labels, teacher, config, options):
    return logit_distillation_loss(output, labels, teacher, temperature=config.distill.logit_temperature,
                                   alpha=config.distill.logit_alpha, lambda2=config.distill.lambda2)


LOGIT = register_method(Method(
    name="logit",
    summary="Softened-logit KL to the flow teacher (temperature distill.logit_temperature, alpha distill.logit_alpha).",
    signals=("logits",),
    loss=loss,
))
