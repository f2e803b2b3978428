# One job per shift domain (params `domains`): its copy of every split, made from the clean
# images by the domain's recipe (mvtec_shift, camera_change, corruption).
rule shift:
    input:
        images=image_inputs(P, ["clean"]),
        manifest="data/processed/manifest.json",
        splits="data/processed/splits.json",
        code=local(source_files("src/shiftad/shift.py", "src/shiftad/corruptions.py")),
    output:
        images=directory("data/domains/{domain}"),
        splits="data/processed/domains/{domain}.json",
    wildcard_constraints:
        domain="|".join(P.domains),
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
        shift=P.shift.model_dump(),
        domain=lambda w: P.domains[w.domain].model_dump(),
        seed=P.seed,
    # every job but the trained detectors' clean chains waits for the shifted images: made first
    priority: 40
    threads: P.rule_threads("shift")
    resources:
        **P.rule_resources("shift"),
    conda:
        "../../environment.yml"
    log:
        "logs/shift/{domain}.log",
    benchmark:
        "logs/benchmarks/shift/{domain}.tsv",
    shell:
        "shiftad shift {params.cli} --root {params.root} --threads {threads} --domain {wildcards.domain} 2> {log}"
