"""Rule generative_denoise: reconstructions of noisy test spectra vs the noiseless mock flux."""
from stargrad.generative_stage import denoise
from stargrad.runlog import rule_logger

with rule_logger(snakemake.log[0]) as log:
    denoise(snakemake.params.model_dirs, snakemake.input.test, snakemake.input.allstar,
            snakemake.params.survey_root, snakemake.input.truth, snakemake.output.table,
            snakemake.output.plots, log=log)
