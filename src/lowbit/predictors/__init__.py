"""Generation backends behind one interface (lowbit.predictors.base.Predictor)."""

from lowbit.predictors.base import Predictor, make_predictor, predictor_names

__all__ = ["Predictor", "make_predictor", "predictor_names"]
