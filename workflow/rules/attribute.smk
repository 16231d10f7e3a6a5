# Attribute stage: exact gradients of every differentiable model w.r.t. the input spectrum.


rule attribute:
    input:
        params="results/models/{model}/{task}/params.npz",
        model="results/models/{model}/{task}/model.json",
        norm="results/models/{model}/{task}/norm.json",
        split=lambda wc: f"results/data/{task_dataset(wc)}/test.fits",
        truth=lambda wc: f"results/truth/{task_dataset(wc)}/crb.fits" if has_truth(wc.task) else [],
    output:
        jacobian="results/attribution/{model}/{task}/jacobian.fits",
        lines=report("results/attribution/{model}/{task}/lines.csv",
                     caption="../report/lines.rst", category="Attribution",
                     subcategory="{task}", labels={"model": "{model}", "table": "lines"}),
        windows=report("results/attribution/{model}/{task}/windows.csv",
                       caption="../report/windows.rst", category="Attribution",
                       subcategory="{task}", labels={"model": "{model}", "table": "window shares"}),
        fidelity="results/attribution/{model}/{task}/fidelity.csv",
        plots=report(directory("results/attribution/{model}/{task}/plots"),
                     patterns=[f"{{label,{REPORT_LABELS}}}.png"], caption="../report/jacobian.rst",
                     category="Attribution", subcategory="{task}",
                     labels={"model": "{model}", "label": "{label}"}),
    params:
        **jax_params("attribute"),
        model_dir=lambda wc, input: str(Path(input.params).parent),
        chunk_size=config["attribute"]["chunk_size"],
        mc_samples=config["attribute"]["mc_samples"],
        max_stars=config["attribute"]["max_stars"],
        seed=config["seed"],
        config_hash=lambda wc: model_digest(wc, "attribute"),
        code=model_code_hash("attribute_model.py"),
    log:
        "logs/attribute/{model}/{task}.log",
    benchmark:
        "benchmarks/attribute/{model}/{task}.tsv"
    threads: 2
    resources:
        **job_resources("attribute", mem_mb=memory(3000, 1.5), runtime=minutes(15, 0.05)),
    conda:
        environment("attribute")
    script:
        "../../scripts/attribute_model.py"
