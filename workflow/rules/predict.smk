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
