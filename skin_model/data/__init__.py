"""Stage 1, data: from files to arrays.

The one image decoder (``imaging``), the image-quality gate (``quality``), the patient
context (``metadata``), the HAM10000 folder, lesion split and input pipeline
(``dataset``), the NumPy twin of the augmentation (``batches``) and reference photographs
that are not dermoscopy (``photos``). Imports nothing from the other stages.
"""
