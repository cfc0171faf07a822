"""The Gen-SIS pipeline as library code: resumable stages (``runner``), the demo's stage graph (``demo``),
its evaluation rows and results table (``results``, rendered by ``table``), the "How to read it" block
under it (``reading``: differences with their noise) and the over-seed summary (``seeds``). The ``gensis demo`` and ``gensis report`` commands only parse arguments and call these."""

from gensis.pipeline.demo import DemoOptions, run_demo, run_pipeline
from gensis.pipeline.results import evaluate, results_table, variants
from gensis.pipeline.runner import Pipeline, Stage, stage_key
from gensis.pipeline.table import Table

__all__ = ["DemoOptions", "Pipeline", "Stage", "Table", "evaluate", "results_table", "run_demo", "run_pipeline",
           "stage_key", "variants"]
