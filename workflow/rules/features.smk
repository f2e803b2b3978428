# Each frozen network of the study (PatchCore, PaDiM, kNN, routed AE; one folder per distinct
# network spec) runs once per image: `study` = the splits of every domain a stage reads (read by fit, score,
# kshot, fewshot), `robustness` = the severity sweep's images (read by robustness), so a sweep
# param reruns the sweep's features only. Later jobs look their batches up by input pixels.
from shiftad.pipeline import feature_specs


if feature_specs(P):  # none when every detector trains its own networks

    rule features:
        input:
            images=image_inputs(P),
            splits=all_splits_inputs(P),
            code=local(source_files("src/shiftad/features.py", "src/shiftad/components/feature_store.py", "src/shiftad/backbones.py",
                                    "src/shiftad/robustness.py", "src/shiftad/shift.py", "src/shiftad/corruptions.py")),
        output:
            [directory(f"results/features/{{set}}/{spec}") for spec in feature_specs(P)],
        wildcard_constraints:
            set="study|robustness",
        params:
            cli=untracked(PARAMS),
            root=untracked(ROOT),
            networks=feature_specs(P),
            features=P.features.model_dump(),
            domains=lambda w: {"fit": P.refit.model_dump(), "fewshot": P.few_shot.adaptation_k} if w.set == "study" else {},
            sweep=lambda w: {"robustness": P.robustness.model_dump(), "sigma": P.shift.illumination_sigma_px, "seed": P.seed} if w.set == "robustness" else {},
            batch_size=P.backbone.batch_size,
        priority: 20  # every model job waits for it; the sweep set feeds robustness
        threads: P.rule_threads("features")
        resources:
            **P.rule_resources("features"),
        conda:
            "../../environment.yml"
        log:
            "logs/features/{set}.log",
        benchmark:
            "logs/benchmarks/features/{set}.tsv",
        shell:
            "shiftad features {params.cli} --root {params.root} --threads {threads} --set {wildcards.set} 2> {log}"
