"""A package of the model's own, beside its factory."""
