"""Stage 3, runtime: what the app, the CLI and the exports load and run.

Loading a model directory and classifying (``inference``), the one path from pixels to a
case result (``pipeline``), verdicts and tiers in words (``advice``), figures at a
clinic's prevalence (``clinic``), Grad-CAM (``explain``), the app's session store
(``service``), batches of files (``predict``), the CSV (``results``), the PDF
(``report``) and exports for TF Serving, LiteRT and ONNX (``serving``). Imports only
from :mod:`skin_model.data` and :mod:`skin_model.model`.
"""
