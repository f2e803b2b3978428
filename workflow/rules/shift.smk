rule shift:
    input:
        images=image_inputs(P, ["clean"]),
        manifest="data/processed/manifest.json",
        splits="data/processed/splits.json",
        code=local(source_files("src/shiftad/shift.py")),
    output:
        images=directory("data/shifted"),
        splits="data/processed/shifted_splits.json",
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
        shift=P.shift.model_dump(),
        seed=P.seed,
    # every job but the trained detectors' clean chains waits for the shifted images: made first
    priority: 40
    threads: P.rule_threads("shift")
    resources:
        **P.rule_resources("shift"),
    conda:
        "../../environment.yml"
    log:
        "logs/shift.log",
    benchmark:
        "logs/benchmarks/shift.tsv",
    shell:
        "shiftad shift {params.cli} --root {params.root} --threads {threads} 2> {log}"
