"""Rule verify_allstar: check the allStar (downloaded or placed by hand) against its SHA-1."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.sdss.survey import verify_allstar
    verify_allstar(snakemake.input[0], snakemake.params.sha1, snakemake.output[0], log=log)
