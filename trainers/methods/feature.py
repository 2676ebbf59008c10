"""Feature distillation (FeatMatch / MARS): the student's block-5 features regress onto the teacher's."""
from vidistill.trainers.losses import feature_distillation_loss
from vidistill.trainers.methods import Method, register_method


def loss(output, labels, teacher, config, options):
    return feature_distillation_loss(output, labels, teacher, weight=config.distill.feature_weight,
                                     lambda2=config.distill.lambda2)


FEATURE = register_method(Method(
    name="feature",
    summary="Block-5 feature regression onto the flow teacher's (MSE, weight distill.feature_weight).",
    signals=("features",),
    loss=loss,
))
