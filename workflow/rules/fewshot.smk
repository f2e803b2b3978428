# Few-shot and label-free adaptation: one job per adapted detector (few_shot.adaptation_detectors) and regime; each clean model plus K
# normal train images of a shift domain (every K, every few-shot domain) scores that domain's
# val and test images.
from shiftad.pipeline import fewshot_domains


rule fewshot:
    input:
        images=image_inputs(P, ["clean", *fewshot_domains(P)]),
        models=lambda w: model_inputs(P, w.detector, w.regime, "clean", w.seed),
        features=lambda w: feature_inputs(P, w.detector),
        splits=[f for d in ["clean", *fewshot_domains(P)] for f in splits_input(d)],
        code=local(source_files("src/shiftad/fewshot.py", "src/shiftad/detectors/memory_bank.py", "src/shiftad/detectors/padim.py")),
    output:
        # a folder: a detector's files depend on the scenarios that run for it (Params.scenario_runs)
        directory("results/fewshot/{detector}/{regime}/seed{seed}"),
    params:
        cli=untracked(PARAMS),
        resize=P.resize,  # masks, maps and model inputs follow it
        root=untracked(ROOT),
        few_shot=P.few_shot.model_dump(),
        seed=P.seed,
    # long jobs (up to a minute) that evaluate waits for: started before the shorter score jobs,
    # which then fill both cores up to evaluate instead of one long job running alone at the end
    priority: lambda w: 6 if w.regime == "global" else 5  # the global bank's job is the longest: first
    threads: P.rule_threads("fewshot")
    resources:
        **P.rule_resources("fewshot"),
    conda:
        "../../environment.yml"
    log:
        "logs/fewshot/{detector}_{regime}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/fewshot/{detector}_{regime}_seed{seed}.tsv",
    shell:
        "shiftad fewshot {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} --regime {wildcards.regime} --seed {wildcards.seed} 2> {log}"
