"""Stage 5, reports: every table, the model card and the README's generated sections,
written from the files evaluation wrote (``tables``, ``card``, ``readme``).
"""
