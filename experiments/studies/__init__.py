"""Studies: the analyses that answer one question each on a model.

- ``scan``: head scores over the whole model (induction, previous-token, n-gram, ...).
- ``icl_vs_gd`` / ``gd``: in-context learning against gradient descent on the same demonstrations.
- ``vectors_study``: task and function vectors, and how much of ICL's accuracy one vector recovers.
- ``dynamics``: the same scores across a zoo model's training checkpoints.
"""
