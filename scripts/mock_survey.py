"""Rule mock_survey: write the embedded mock survey in the DR17 layout."""
from pathlib import Path

from stargrad.mock.writer import write_mock_survey
from stargrad.runlog import rule_logger

with rule_logger(snakemake.log[0]) as log:
    write_mock_survey(Path(snakemake.output.allstar).parent, **snakemake.params.mock,
                      config_digest=snakemake.params.config_hash, log=log)
