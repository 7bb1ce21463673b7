# Project every image of the configured set onto all modes of a model: per-image max/min of the query and key maps,
# the top-k images per (layer, head, mode, sign), and the anisotropy sums. Streams to disk (memory does not grow
# with the number of images); a corrupt image is skipped, counted and named in the store and the log.
rule project:
    input:
        manifest="results/weights/{model}.json",
        modes="results/modes/{model}.zarr",
    output:
        directory("results/projections/{model}/{images}.zarr"),
    params:
        spec=model_spec,
        source=lambda w: config["images"][w.images]["source"],
        limit=lambda w: (
            f"--limit {config['images'][w.images]['limit']}" if config["images"][w.images]["limit"] else ""
        ),
        tokens=config["projections"]["tokens"],
        batch_size=config["projections"]["batch_size"],
        top_k=config["projections"]["top_k"],
        workers=config["projections"]["workers"],
        device=config["analysis"]["device"],
    threads: project_resources("threads")
    resources:
        mem_mb=project_resources("mem_mb"),
        runtime=project_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/project/{model}/{images}.log",
    benchmark:
        "results/benchmarks/project/{model}/{images}.tsv"
    shell:
        qkdissect(
            "project {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "--modes {input.modes:q} --images {params.source:q} {params.limit} --tokens {params.tokens} "
            "--batch-size {params.batch_size} --top-k {params.top_k} --workers {params.workers} "
            "--device {params.device} -o {output:q} > {log:q} 2>&1",
            threads=True,
        )
