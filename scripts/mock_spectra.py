"""Rule mock_spectra: the aspcapStar files of one shard of the embedded mock survey."""
from pathlib import Path

from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.mock.writer import write_mock_shard
    write_mock_shard(Path(snakemake.params.survey_root), snakemake.output[0],
                     shard=int(snakemake.wildcards.shard), n_shards=snakemake.params.n_shards,
                     config_digest=snakemake.params.config_hash, log=log,
                     **snakemake.params.mock)
