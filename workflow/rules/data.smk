# Data stage: select + split the catalogue, then compile each split into one FITS file.


rule select_split:
    input:
        allstar=ALLSTAR,
        verified=allstar_verified(),
        seismic=seismic_input(),
    output:
        "results/data/{dataset}/split.csv",
    params:
        dataset=lambda wc: config["datasets"][wc.dataset],
        code=code_hash("select_split.py"),
    log:
        "logs/select/{dataset}.log",
    localrule: True
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/select_split.py"


rule compile_dataset:
    input:
        split="results/data/{dataset}/split.csv",
        allstar=ALLSTAR,
        seismic=seismic_input(),
        spectra=lambda wc: spectra_ready(wc.dataset),
    output:
        splits=dataset_split_files("{dataset}"),
        quarantine="results/data/{dataset}/quarantine.csv",
    params:
        survey_root=lambda wc, input: str(Path(input.allstar).parent),
        bad_error=lambda wc: config["datasets"][wc.dataset]["bad_error"],
        max_bad_fraction=lambda wc: config["datasets"][wc.dataset]["max_bad_fraction"],
        on_bad_file=config["survey"]["on_bad_file"],
        spectra=config["survey"]["sas"]["spectra"] if SURVEY_SOURCE == "sas" else "aspcapStar",
        header=lambda wc: provenance.header_cards(
            config_digest(*dataset_entries(wc.dataset)),
            config["datasets"][wc.dataset]["split"]["seed"]),
        code=code_hash("compile_dataset.py"),
    log:
        "logs/compile/{dataset}.log",
    benchmark:
        "benchmarks/compile/{dataset}.tsv"
    resources:
        mem_mb=2000,
        runtime=minutes(10, 0.02),
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/compile_dataset.py"
