# Predict stage: values and uncertainties (MC dropout for Bayesian families) for every split,
# one job per (model, task) so the model is loaded and compiled once.


rule predict:
    input:
        params="results/models/{model}/{task}/params.npz",
        model="results/models/{model}/{task}/model.json",
        norm="results/models/{model}/{task}/norm.json",
        splits=lambda wc: expand("results/data/{dataset}/{split}.fits",
                                 dataset=task_dataset(wc), split=SPLITS),
    output:
        splits=expand("results/predictions/{{model}}/{{task}}/{split}.fits", split=SPLITS),
        calibration="results/predictions/{model}/{task}/calibration.csv",
    params:
        **jax_params("predict"),
        model_dir=lambda wc, input: str(Path(input.params).parent),
        mc_samples=config["predict"]["mc_samples"],
        mc_splits=config["predict"]["mc_splits"],
        calibrate=config["predict"]["calibrate"],
        batch_size=config["predict"]["batch_size"],
        seed=config["seed"],
        config_hash=lambda wc: model_digest(wc, "predict"),
        code=model_code_hash("predict_splits.py"),
    log:
        "logs/predict/{model}/{task}.log",
    benchmark:
        "benchmarks/predict/{model}/{task}.tsv"
    threads: 2
    resources:
        **job_resources("predict", mem_mb=memory(1500, 1.5), runtime=minutes(10, 0.05)),
    conda:
        environment("predict")
    script:
        "../../scripts/predict_splits.py"


if SURVEY_SOURCE == "mock":

    rule oracle:
        input:
            train=lambda wc: f"results/data/{task_dataset(wc)}/train.fits",
            splits=lambda wc: expand("results/data/{dataset}/{split}.fits",
                                     dataset=task_dataset(wc), split=ORACLE_SPLITS),
        output:
            splits=expand("results/predictions/oracle/{{task}}/{split}.fits",
                          split=ORACLE_SPLITS),
            calibration="results/predictions/oracle/{task}/calibration.csv",
        params:
            **jax_params("oracle"),
            task_spec=lambda wc: config["tasks"][wc.task],
            settings=config["oracle"],
            config_hash=lambda wc: config_digest(*dataset_entries(task_dataset(wc)),
                                                 ("tasks", wc.task), ("oracle",)),
            code=code_hash("oracle_predictions.py"),
        log:
            "logs/oracle/{task}.log",
        benchmark:
            "benchmarks/oracle/{task}.tsv"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=minutes(30, 0.2),
        conda:
            environment("oracle")
        script:
            "../../scripts/oracle_predictions.py"
