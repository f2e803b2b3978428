from shiftad.pipeline import bundle_dirs, export_inputs


# One bundle per fitted model (`shiftad predict` / `shiftad serve` load it): the model
# folder(s), the thresholds validation chose, the ONNX feature network checked against torch.
rule export:
    input:
        images=lambda w: image_inputs(P, [w.domain]),
        model=lambda w: export_inputs(P, w.detector, w.regime, w.domain),
        table="results/metrics/scenarios.csv",
        splits=lambda w: splits_input(w.domain),
        code=local(source_files("src/shiftad/export.py", "src/shiftad/bundle.py")),
    output:
        directory("results/bundles/{detector}/{regime}/{domain}"),
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
        export=P.export.model_dump(),
    threads: P.rule_threads("export")
    resources:
        **P.rule_resources("export"),
    conda:
        "../../environment.yml"
    log:
        "logs/export/{detector}_{regime}_{domain}.log",
    shell:
        "shiftad export {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} --regime {wildcards.regime} --domain {wildcards.domain} --out results/bundles/{wildcards.detector}/{wildcards.regime}/{wildcards.domain} 2> {log}"
