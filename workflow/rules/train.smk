# Train stage: one job per (model, task); gradient families share stargrad.train.fit. A job that
# nears its time budget checkpoints and exits non-zero; its retries resume from the checkpoint.


rule train:
    input:
        train=lambda wc: f"results/data/{task_dataset(wc)}/train.fits",
        valid=lambda wc: f"results/data/{task_dataset(wc)}/valid.fits",
    output:
        params="results/models/{model}/{task}/params.npz",
        model="results/models/{model}/{task}/model.json",
        norm="results/models/{model}/{task}/norm.json",
        history="results/models/{model}/{task}/history.csv",
    params:
        **jax_params("train"),
        # the settings that decide the result; the run-control fields (checkpoint_every,
        # time_budget_s) reach the job through its config, so that editing them reruns nothing
        model_spec=lambda wc: model_settings(wc.model),
        task_spec=lambda wc: config["tasks"][wc.task],
        seed=config["seed"],
        config_hash=lambda wc: model_digest(wc),
        code=model_code_hash("train_model.py"),
        checkpoint_dir=checkpoint_dir,
    log:
        "logs/train/{model}/{task}.log",
    benchmark:
        "benchmarks/train/{model}/{task}.tsv"
    threads: 2
    retries: JOBS["train_retries"]
    resources:
        **job_resources("train", mem_mb=memory(1500, 4.0), runtime=train_minutes),
    conda:
        environment("train")
    script:
        "../../scripts/train_model.py"
