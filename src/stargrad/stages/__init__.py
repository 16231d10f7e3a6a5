"""What each workflow rule does, as library calls: the rule scripts only translate
`snakemake.input/output/params` into these functions. One module per stage, so that a
rule's code digest covers the code it runs and nothing else."""
