from shiftad.pipeline import DOMAINS, GLOBAL_CATEGORY, REGIMES, model_path, splits_input, teacher_inputs


wildcard_constraints:
    regime="|".join(REGIMES),
    domain="|".join(DOMAINS),
    model="|".join(DOMAINS),
    seed=r"\d+",


rule fit:
    input:
        images=lambda w: image_inputs(P, [w.domain]),
        splits=lambda w: splits_input(w.domain),
        teacher=lambda w: teacher_inputs(w.detector),
        code=local(source_files("src/shiftad/fit.py", "src/shiftad/detectors", "src/shiftad/components", "src/shiftad/backbones.py")),
    output:
        directory("results/models/{detector}/{regime}/{domain}/seed{seed}/{category}"),
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
        detector=lambda w: P.model_dump()[w.detector],
        backbone=P.backbone.model_dump(),
        image_size=P.image_size,
    threads: P.rule_threads("fit")
    resources:
        **P.rule_resources("fit"),
    conda:
        "../../environment.yml"
    log:
        "logs/fit/{detector}_{regime}_{domain}_seed{seed}_{category}.log",
    shell:
        "shiftad fit {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} --regime {wildcards.regime} --domain {wildcards.domain} --category {wildcards.category} --seed {wildcards.seed} 2> {log}"
