"""Rule compare_task: metrics table and summary figure of every model on one task."""
from stargrad.compare import compare_task
from stargrad.runlog import rule_logger
from stargrad.tasks import make_task

with rule_logger(snakemake.log[0]) as log:
    compare_task(snakemake.input.predictions, snakemake.input.crb or None,
                 make_task(snakemake.wildcards.task, snakemake.params.task_spec),
                 snakemake.output.metrics, snakemake.output.summary, log=log)
