"""Detection distillation methods (the registry itself comes from branch i15)."""
