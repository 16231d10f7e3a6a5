# Compare stage: per task, metrics across models and the figures people look at.


rule compare_task:
    input:
        predictions=lambda wc: expand("results/predictions/{model}/{task}/{split}.fits",
                                      model=models_of_task(wc.task), task=wc.task,
                                      split=task_splits(wc.task)),
        crb=lambda wc: f"results/truth/{task_dataset(wc)}/crb.fits" if has_truth(wc.task) else [],
    output:
        metrics=report("results/compare/{task}/metrics.csv", caption="../report/metrics.rst",
                       category="Compare", subcategory="{task}", labels={"task": "{task}",
                       "figure": "metrics table"}),
        summary=report("results/compare/{task}/summary.png", caption="../report/summary.rst",
                       category="Compare", subcategory="{task}", labels={"task": "{task}",
                       "figure": "summary by label"}),
    params:
        task_spec=lambda wc: config["tasks"][wc.task],
        code=code_hash("compare.py", "plots.py", "pipeline.py"),
    log:
        "logs/compare/{task}.log",
    localrule: True
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/compare_task.py"


rule plot_pred_vs_true:
    input:
        "results/predictions/{model}/{task}/test.fits",
    output:
        report("results/compare/{task}/pred_vs_true_{model}.png",
               caption="../report/pred_vs_true.rst", category="Compare", subcategory="{task}",
               labels={"task": "{task}", "figure": "predicted vs true: {model}"}),
    params:
        task_spec=lambda wc: config["tasks"][wc.task],
        code=code_hash("plots.py", "pipeline.py"),
    log:
        "logs/compare/{task}/pred_vs_true_{model}.log",
    localrule: True
    conda:
        "../../envs/stargrad.yaml"
    script:
        "../../scripts/plot_pred_vs_true.py"
