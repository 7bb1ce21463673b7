# Beyond the paper: what removing a mode does. For each model of figures.ablation, the modes the `ablation` section
# selects are ablated one at a time on projections.images (the first ablation.limit images, with the set's dedupe):
# each mode's term taken out of its head's attention logits, the head's attention change (and, unless
# ablation.attention_only, the model's output change) on the set and on the mode's top images of its projections
# store (qkdissect.passes.ablation). The store feeds the ablation figure, the mode atlas and our claim A1.


rule ablate:
    input:
        manifest="results/weights/{model}.json",
        modes="results/modes/{model}.zarr",
        projections="results/projections/{model}/{images}.zarr",
    output:
        directory("results/ablation/{model}/{images}.zarr"),
    params:
        # the ablation section, and the projections' keys (the store it reads)
        config_keys=config_keys(
            ["models", "{model}"], ["images", "{images}"], ["ablation"], requests.AblationRequest,
            requests.ProjectRequest,
        ),
        spec=model_spec,
        source=lambda w: config["images"][w.images]["source"],
        limit=lambda w: OPTIONS.ablation_limit(w.images),
        dedupe=lambda w: dedupe_option(w.images),
        options=pass_options(requests.AblationRequest),
        device=config["analysis"]["device"],
    threads: project_resources("threads")
    resources:
        mem_mb=project_resources("mem_mb"),
        runtime=project_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/ablation/{model}/{images}.log",
    benchmark:
        "results/benchmarks/ablation/{model}/{images}.tsv"
    shell:
        qkdissect(
            "ablate {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "--modes {input.modes:q} --projections {input.projections:q} --images {params.source:q} {params.limit} "
            "{params.dedupe} {params.options} --device {params.device:q} -q -o {output:q} > {log:q} 2>&1",
            threads=True,
        )
