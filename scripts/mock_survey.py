"""Rule mock_survey: write the embedded mock survey in the DR17 layout."""
from pathlib import Path

from stargrad.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.mock.writer import write_mock_survey
    write_mock_survey(Path(snakemake.output.allstar).parent, **snakemake.params.mock,
                      config_digest=snakemake.params.config_hash, log=log)
