"""Rule generative_denoise: reconstructions of noisy test spectra vs the noiseless mock flux."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.generative import denoise
    denoise(snakemake.params.model_dirs, snakemake.input.test, snakemake.input.allstar,
            snakemake.params.survey_root, snakemake.input.truth, snakemake.output.table,
            snakemake.output.plots, log=log)
