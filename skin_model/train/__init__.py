"""Stage 6, train: from a HAM10000 folder to a finished model directory.

The recipe (``training``), data-parallel training (``distribute``), finalising a trained
network into a model directory (``finalise``) and lesion-grouped cross-validation
(``crossval``). The top stage: it may use every other one; nothing below imports it.
"""
