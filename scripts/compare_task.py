"""Rule compare_task: metrics, scorecard, ranking and Jacobian comparison of one task."""
from pathlib import Path

from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.compare import compare_task
    from stargrad.tasks import make_task
    compare_task(snakemake.input.predictions, snakemake.input.crb or None,
                 {Path(p).parent.parent.name: Path(p).parent for p in snakemake.input.jacobians},
                 make_task(snakemake.wildcards.task, snakemake.params.task_spec),
                 dict(snakemake.output.items()), log=log)
