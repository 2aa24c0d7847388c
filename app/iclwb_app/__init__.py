"""What the Streamlit app's pages compute: pure functions, reachable from tests and notebooks.

The pages (``app/views``) hold only UI code; every number they show comes from a module here (or
from the layers below: probes, circuits, experiments), so ``tests/app`` checks it without a
browser. One module per section of the app:

- ``model_info``: what kind of model a name loads to, token labels (and ``AppInputError``);
- ``prompting``: task prompts through ``experiments.tasks.task_batch``, or a typed prompt;
- ``attention_view``: one prompt's attention patterns, per-head summaries and figures (explorer);
- ``scan_view``: the head scan's table, heatmaps and top heads;
- ``results_view``: read, filter and plot a results folder (read only below the launch folder);
- ``circuit_view``, ``icl_gd_view``, ``training_view``: the circuit, ICL-vs-GD and training-dynamics pages;
- ``stats_view``: tables with intervals and one-line verdicts (``probes.stats``);
- ``ui``: Streamlit helpers shared by the pages (cached model loading, the sidebar).
"""
