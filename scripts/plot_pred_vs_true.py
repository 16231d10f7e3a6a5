"""Rule plot_pred_vs_true: predicted against true labels of one model on the test split."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.predictions import read_predictions
    from stargrad.plots.compare import plot_pred_vs_true
    from stargrad.tasks import make_task
    task = make_task(snakemake.wildcards.task, snakemake.params.task_spec)
    plot_pred_vs_true(snakemake.output[0], read_predictions(snakemake.input[0]), task.labels,
                      f"{snakemake.wildcards.model} on {task.name} (test split)", task.kind)
    log(f"wrote {snakemake.output[0]}")
