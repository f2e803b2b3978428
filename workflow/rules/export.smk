from shiftad.pipeline import export_inputs


# The bundles of one detector, one per fitted model of the reference seed (`shiftad predict` /
# `shiftad serve` load them): the model folder(s), the thresholds validation chooses (from the
# validation scores, as evaluate does: no wait for evaluation), the ONNX feature network checked
# against torch. One job per detector: a bundle is mostly copying.
rule export:
    input:
        images=lambda w: image_inputs(P, P.fit_domains_of(w.detector)),
        models=lambda w: [m for r in REGIMES for d in P.fit_domains_of(w.detector) for m in export_inputs(P, w.detector, r, d)],
        splits=lambda w: [f for d in P.fit_domains_of(w.detector) for f in splits_input(d)],
        code=local(source_files("src/shiftad/export.py", "src/shiftad/bundle.py", "src/shiftad/evaluate/thresholds.py")),
    output:
        directory("results/bundles/{detector}"),  # <regime>/<domain> per fitted model (the domains differ by detector)
    params:
        cli=untracked(PARAMS),
        root=untracked(ROOT),
        export=P.export.model_dump(),
        threshold=P.evaluation.threshold.model_dump(),
    # bundles are read by no later stage: built while models are scored, never in the serial tail
    priority: 10
    threads: P.rule_threads("export")
    resources:
        **P.rule_resources("export"),
    conda:
        "../../environment.yml"
    log:
        "logs/export/{detector}.log",
    benchmark:
        "logs/benchmarks/export/{detector}.tsv",
    shell:
        "shiftad export {params.cli} --root {params.root} --threads {threads} --detector {wildcards.detector} 2> {log}"
