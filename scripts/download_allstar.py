"""Rule download_allstar: fetch and verify the DR17 allStar catalogue."""
from stargrad.download import download_allstar
from stargrad.runlog import rule_logger

with rule_logger(snakemake.log[0]) as log:
    p = snakemake.params
    download_allstar(p.base_url, snakemake.output[0], sha1=p.sha1, retries=p.retries,
                     backoff_s=p.backoff_s, timeout_s=p.timeout_s, log=log)
