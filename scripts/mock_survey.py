"""Rule mock_survey: the catalogues of the embedded mock survey (allStar, seismic, truth), once
every shard of its spectra is written."""
from pathlib import Path

from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.mock.writer import mock_population, write_mock_catalogues
    write_mock_catalogues(Path(snakemake.output.allstar).parent,
                          mock_population(**snakemake.params.mock),
                          config_digest=snakemake.params.config_hash, log=log)
