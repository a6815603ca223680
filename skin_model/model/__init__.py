"""Stage 2, model: the network and everything fitted on top of it, and its files.

Builders, layers, loss and optimizer (``networks``), one spec per backbone
(``architectures``), offline ImageNet weights (``backbones``), the post-hoc maths and
layer (``calibration``, ``posthoc``), the "not dermoscopic" detector (``ood``), and the
model directory's files with their typed readers (``artifacts``, ``config``,
``settings``). Imports only from :mod:`skin_model.data`.
"""
