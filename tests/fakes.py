"""Small stand-ins shared by the fast tests."""

import numpy as np

from skin_model.runtime.inference import Prediction


def prediction(risk: float, threshold: float = 0.3, context=None, looks: bool = True) -> Prediction:
    """A melanoma-vs-naevus prediction whose malignant risk is ``risk``."""
    p = np.zeros(7)
    p[4], p[5] = risk, 1 - risk
    return Prediction(
        probabilities=p,
        malignant_probability=risk,
        suspicious=risk >= threshold,
        unsure=False,
        ood_score=1.0,
        looks_dermoscopic=looks,
        decision=int(np.argmax(p)),
        threshold=threshold,
        context=context,
    )
