"""Rule attribute: mean Jacobians, top lines, window shares and fidelity of one model."""
from pathlib import Path

from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.attribute import attribute
    attribute(snakemake.params.model_dir, snakemake.input.split,
              Path(snakemake.output.jacobian).parent, chunk_size=snakemake.params.chunk_size,
              mc_samples=snakemake.params.mc_samples, seed=snakemake.params.seed,
              max_stars=snakemake.params.max_stars, truth_path=snakemake.input.truth or None,
              config_digest=snakemake.params.config_hash, log=log)
