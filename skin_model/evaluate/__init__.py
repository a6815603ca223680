"""Stage 4, evaluate: measuring a model.

Metric maths (``metrics``), a model on labelled data (``evaluation``), changed copies of
held-out images (``robustness``), averaged models (``ensemble``) and the benchmark
(``bench``, ``bench_children``). Imports only from the stages below it.
"""
