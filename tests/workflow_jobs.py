"""Reading Snakemake's dry-run plan in tests."""


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a `snakemake -n` plans."""
    jobs = []
    for block in dry_run_output.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        head = next((line for line in lines if line.startswith(("rule ", "localrule "))), None)
        if head is None:
            continue
        wildcards = next((line.split(":", 1)[1] for line in lines
                          if line.startswith("wildcards:")), "")
        pairs = (item.split("=", 1) for item in wildcards.split(",") if "=" in item)
        jobs.append((head.split()[1].rstrip(":"), {k.strip(): v.strip() for k, v in pairs}))
    return jobs
