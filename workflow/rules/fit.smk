from shiftad.pipeline import (GLOBAL_CATEGORY, REGIMES, category_flag, fit_job_name, fit_output, model_inputs, model_path,
                              splits_input, teacher_inputs)


wildcard_constraints:
    regime="|".join(REGIMES),
    domain="|".join(P.data_domains),
    model="|".join(P.fit_domains),
    seed=r"\d+",


# One job fits every model of a detector, regime, training domain and seed (fit_jobs: per_regime),
# or one model (fit_jobs: per_model, a `category` wildcard).
rule fit:
    input:
        images=lambda w: image_inputs(P, [w.domain]),
        splits=lambda w: splits_input(w.domain),
        teacher=lambda w: teacher_inputs(w.detector),
        features=lambda w: feature_inputs(P, w.detector),
        code=local(source_files("src/shiftad/fit.py", "src/shiftad/detectors", "src/shiftad/components", "src/shiftad/backbones.py")),
    output:
        directory(fit_output(P)),
    params:
        cli=untracked(PARAMS),
        resize=P.resize,  # masks, maps and model inputs follow it
        root=untracked(ROOT),
        category=category_flag,
        detector=lambda w: P.model_dump()[w.detector],
        backbone=P.backbone.model_dump(),
        image_size=P.image_size,
        categories=P.categories,
    # fits gate every later job of their detector; scoring (priority 0) then fills the cores up to evaluate
    priority: 10
    threads: P.rule_threads("fit")
    resources:
        **P.rule_resources("fit"),
    conda:
        "../../environment.yml"
    log:
        f"logs/fit/{fit_job_name(P)}.log",
    benchmark:
        f"logs/benchmarks/fit/{fit_job_name(P)}.tsv",
    shell:
        "shiftad fit {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} --regime {wildcards.regime} --domain {wildcards.domain} --seed {wildcards.seed} {params.category} 2> {log}"
