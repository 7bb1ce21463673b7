# The mode atlas: every mode of every atlas model (config `atlas`) with its top images, in a web page that opens
# from file:// (results/atlas/index.html). The atlas pass runs each model once over its top images (on
# projections.images) and stores their query and key maps (8-bit) and thumbnails; the page is then written from the
# stores alone, with its provenance (audited like a figure's) and a page in the report. With projections.shards
# N > 1 the atlas pass is sharded too: N atlas_maps jobs over the top images ({images}.shards/K-of-N.zarr) and
# merge_atlas_shards, which writes the very store one job writes (SHARDS, SHARD_PART: projections.smk).


rule atlas_maps:
    input:
        manifest="results/weights/{model}.json",
        modes="results/modes/{model}.zarr",
        projections="results/projections/{model}/{images}.zarr",
    output:
        directory(f"results/atlas_maps/{{model}}/{{images}}{SHARD_PART}.zarr"),
    wildcard_constraints:
        shard=r"\d+",
    params:
        config_keys=config_keys(["models", "{model}"], ["atlas"], requests.AtlasMapsRequest),
        spec=model_spec,
        shard=lambda w: f"--shard {w.shard}/{SHARDS}" if SHARDS > 1 else "",
        options=pass_options(requests.AtlasMapsRequest),
        device=config["analysis"]["device"],
    threads: project_resources("threads")
    resources:
        mem_mb=project_resources("mem_mb"),
        runtime=project_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        f"results/logs/atlas_maps/{{model}}/{{images}}{SHARD_PART}.log",
    benchmark:
        f"results/benchmarks/atlas_maps/{{model}}/{{images}}{SHARD_PART}.tsv"
    shell:
        qkdissect(
            "atlas-maps {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "--modes {input.modes:q} --projections {input.projections:q} {params.shard} {params.options} "
            "--device {params.device:q} -q -o {output:q} > {log:q} 2>&1",
            threads=True,
        )


if SHARDS > 1:

    rule merge_atlas_shards:
        input:
            shards=lambda w: [f"results/atlas_maps/{w.model}/{w.images}.shards/{k}-of-{SHARDS}.zarr"
                              for k in range(1, SHARDS + 1)],
        output:
            directory("results/atlas_maps/{model}/{images}.zarr"),
        params:
            config_keys=config_keys(["models", "{model}"], ["atlas"]),
        resources:
            mem_mb=project_resources("mem_mb"),
            runtime=project_resources("runtime"),
        conda:
            "../envs/qkdissect.yaml"
        log:
            "results/logs/merge_atlas_shards/{model}/{images}.log",
        benchmark:
            "results/benchmarks/merge_atlas_shards/{model}/{images}.tsv"
        shell:
            qkdissect("merge-shards {input.shards:q} -o {output:q} > {log:q} 2>&1")


rule atlas:
    localrule: True
    input:
        maps=[atlas_maps_store(m) for m in ATLAS_MODELS],
        modes=[f"results/modes/{m}.zarr" for m in ATLAS_MODELS],
        scores=[f"results/scores/{m}.zarr" for m in ATLAS_MODELS],
        # each mode's ablation effect beside its top images, for the models that have one (rules/ablation.smk)
        ablation=[ablation_store(m) for m in ATLAS_MODELS if m in ABLATION_MODELS],
    output:
        index="results/atlas/index.html",
        data=directory("results/atlas/data"),
        provenance="results/atlas/atlas.provenance.json",
        page=report(
            "results/atlas/atlas.provenance.html",
            caption="../report/atlas.rst",
            category=REPORT_CATEGORIES[ATLAS_CATEGORY],
            labels={"page": "mode atlas"},
        ),
    params:
        config_keys=config_keys(["atlas"], ["projections", "images"], ["figures", "ablation"]),
        # the results folder (its name carries a module's prefix)
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.index)),
        models=ATLAS_MODELS,
        images=config["projections"]["images"],
        labels=atlas_labels,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/atlas.log",
    benchmark:
        "results/benchmarks/atlas.tsv"
    shell:
        qkdissect(
            "atlas {params.results:q} --models {params.models:q} --images {params.images:q} {params.labels} "
            "--no-compute -q > {log:q} 2>&1"
        )
