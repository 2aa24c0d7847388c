"""The ``iclwb`` command line: ``main`` (entry point and the model/zoo/study commands), ``sweep``
(``iclwb sweep ...``) and ``app`` (``iclwb app``)."""
