# Project every image of the configured set onto all modes of a model: per-image max/min of the query and key maps,
# the top-k images per (layer, head, mode, sign), and the anisotropy sums. Streams to disk (memory does not grow
# with the number of images); a corrupt image is skipped, counted and named in the store and the log.
# With projections.shards N > 1: N jobs, each over its share of the set's batches, write shard stores
# ({images}.shards/K-of-N.zarr; a failed one reruns alone), and merge_shards merges them into the very store one job
# writes (qkdissect.passes.shards).
SHARDS = config["projections"]["shards"]
SHARD_PART = f".shards/{{shard}}-of-{SHARDS}" if SHARDS > 1 else ""


rule project:
    input:
        manifest="results/weights/{model}.json",
        modes="results/modes/{model}.zarr",
    output:
        directory(f"results/projections/{{model}}/{{images}}{SHARD_PART}.zarr"),
    wildcard_constraints:
        shard=r"\d+",
    params:
        config_keys=config_keys(["models", "{model}"], ["images", "{images}"], requests.ProjectRequest),
        spec=model_spec,
        source=lambda w: config["images"][w.images]["source"],
        limit=lambda w: limit_option("images", w.images),
        dedupe=lambda w: dedupe_option(w.images),
        shard=lambda w: f"--shard {w.shard}/{SHARDS}" if SHARDS > 1 else "",
        options=pass_options(requests.ProjectRequest),
        device=config["analysis"]["device"],
    threads: project_resources("threads")
    resources:
        mem_mb=project_resources("mem_mb"),
        runtime=project_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        f"results/logs/project/{{model}}/{{images}}{SHARD_PART}.log",
    benchmark:
        f"results/benchmarks/project/{{model}}/{{images}}{SHARD_PART}.tsv"
    shell:
        qkdissect(
            "project {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "--modes {input.modes:q} --images {params.source:q} {params.limit} {params.dedupe} {params.shard} "
            "{params.options} --device {params.device:q} -o {output:q} > {log:q} 2>&1",
            threads=True,
        )


if SHARDS > 1:

    rule merge_shards:
        input:
            shards=lambda w: [f"results/projections/{w.model}/{w.images}.shards/{k}-of-{SHARDS}.zarr"
                              for k in range(1, SHARDS + 1)],
        output:
            directory("results/projections/{model}/{images}.zarr"),
        params:
            config_keys=config_keys(["models", "{model}"], ["images", "{images}"], requests.ProjectRequest),
        resources:
            mem_mb=config["resources"]["scores"]["mem_mb"],
            runtime=project_resources("runtime"),
        conda:
            "../envs/qkdissect.yaml"
        log:
            "results/logs/merge_shards/{model}/{images}.log",
        benchmark:
            "results/benchmarks/merge_shards/{model}/{images}.tsv"
        shell:
            qkdissect("merge-shards {input.shards:q} -o {output:q} > {log:q} 2>&1")


# A mask dataset with `shards: N` (N > 1) runs its preference and same-object passes as N jobs each
# ({dataset}.shards/K-of-N.zarr, whole batches) and one merge_mask_shards job per pass that writes the store one job
# writes; the other datasets run in one job.
MASK_SHARDS = {name: entry.get("shards", 1) for name, entry in config["mask_datasets"].items()}


WHOLE_MASKS = names_pattern([n for n, k in MASK_SHARDS.items() if k == 1])
SHARDED_MASKS = names_pattern([n for n, k in MASK_SHARDS.items() if k > 1])


# Attention preference (paper 4.1, Fig. 2) of a model on a mask dataset: per image, layer and head the attention of
# the target and distractor tokens on the target, distractor and background regions.
rule preference:
    input:
        manifest="results/weights/{model}.json",
    output:
        directory("results/preference/{model}/{dataset}.zarr"),
    wildcard_constraints:
        dataset=WHOLE_MASKS,
    params:
        shard="",
        config_keys=config_keys(["models", "{model}"], ["mask_datasets", "{dataset}"], requests.PreferenceRequest),
        spec=model_spec,
        source=lambda w: config["mask_datasets"][w.dataset]["source"],
        limit=lambda w: limit_option("mask_datasets", w.dataset),
        options=pass_options(requests.PreferenceRequest),
        device=config["analysis"]["device"],
    threads: project_resources("threads")
    resources:
        mem_mb=project_resources("mem_mb"),
        runtime=project_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/preference/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/preference/{model}/{dataset}.tsv"
    shell:
        qkdissect(
            "preference {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "--dataset {params.source:q} {params.limit} {params.shard} {params.options} "
            "--device {params.device:q} -q -o {output:q} > {log:q} 2>&1",
            threads=True,
        )


# Same-object probability (paper 4.2, Fig. 6) of every mode of a model on a dataset with object masks.
rule same_object:
    input:
        manifest="results/weights/{model}.json",
        modes="results/modes/{model}.zarr",
    output:
        directory("results/same_object/{model}/{dataset}.zarr"),
    wildcard_constraints:
        dataset=WHOLE_MASKS,
    params:
        shard="",
        config_keys=config_keys(["models", "{model}"], ["mask_datasets", "{dataset}"], requests.SameObjectRequest),
        spec=model_spec,
        source=lambda w: config["mask_datasets"][w.dataset]["source"],
        limit=lambda w: limit_option("mask_datasets", w.dataset),
        options=pass_options(requests.SameObjectRequest),
        device=config["analysis"]["device"],
    threads: project_resources("threads")
    resources:
        mem_mb=project_resources("mem_mb"),
        runtime=project_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/same_object/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/same_object/{model}/{dataset}.tsv"
    shell:
        qkdissect(
            "same-object {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "--modes {input.modes:q} --dataset {params.source:q} {params.limit} {params.shard} {params.options} "
            "--device {params.device:q} -q -o {output:q} > {log:q} 2>&1",
            threads=True,
        )


MASK_SHARD_PART = "{dataset}.shards/{shard}-of-{shards}"


use rule preference as preference_shard with:
    output:
        directory(f"results/preference/{{model}}/{MASK_SHARD_PART}.zarr"),
    wildcard_constraints:
        dataset=SHARDED_MASKS,
        shard=r"\d+",
        shards=r"\d+",
    params:
        shard=lambda w: f"--shard {w.shard}/{w.shards}",
    log:
        f"results/logs/preference/{{model}}/{MASK_SHARD_PART}.log",
    benchmark:
        f"results/benchmarks/preference/{{model}}/{MASK_SHARD_PART}.tsv"


use rule same_object as same_object_shard with:
    output:
        directory(f"results/same_object/{{model}}/{MASK_SHARD_PART}.zarr"),
    wildcard_constraints:
        dataset=SHARDED_MASKS,
        shard=r"\d+",
        shards=r"\d+",
    params:
        shard=lambda w: f"--shard {w.shard}/{w.shards}",
    log:
        f"results/logs/same_object/{{model}}/{MASK_SHARD_PART}.log",
    benchmark:
        f"results/benchmarks/same_object/{{model}}/{MASK_SHARD_PART}.tsv"


rule merge_mask_shards:
    input:
        shards=lambda w: [f"results/{w.mask_pass}/{w.model}/{w.dataset}.shards/{k}-of-{MASK_SHARDS[w.dataset]}.zarr"
                          for k in range(1, MASK_SHARDS[w.dataset] + 1)],
    output:
        directory("results/{mask_pass}/{model}/{dataset}.zarr"),
    wildcard_constraints:
        mask_pass="preference|same_object",
        dataset=SHARDED_MASKS,
    params:
        config_keys=config_keys(["models", "{model}"], ["mask_datasets", "{dataset}"]),
    resources:
        mem_mb=project_resources("mem_mb"),
        runtime=project_resources("runtime"),
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/merge_mask_shards/{mask_pass}/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/merge_mask_shards/{mask_pass}/{model}/{dataset}.tsv"
    shell:
        qkdissect("merge-shards {input.shards:q} -o {output:q} > {log:q} 2>&1")


# Beyond the paper: the model's real attention logits on the image set, split into the token-token term (the
# modes) and the three bias terms; the top-k modes' share of the token-token variance; who wins the softmax.
rule logits:
    input:
        manifest="results/weights/{model}.json",
        modes="results/modes/{model}.zarr",
    output:
        directory("results/logits/{model}/{images}.zarr"),
    params:
        config_keys=config_keys(
            ["models", "{model}"], ["images", "{images}"], ["projections", "logits_limit"], requests.LogitsRequest
        ),
        spec=model_spec,
        source=lambda w: config["images"][w.images]["source"],
        limit=lambda w: logits_limit(w.images),
        dedupe=lambda w: dedupe_option(w.images),
        options=pass_options(requests.LogitsRequest),
        device=config["analysis"]["device"],
    threads: project_resources("threads")
    resources:
        mem_mb=project_resources("mem_mb"),
        runtime=project_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/logits/{model}/{images}.log",
    benchmark:
        "results/benchmarks/logits/{model}/{images}.tsv"
    shell:
        qkdissect(
            "logits {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "--modes {input.modes:q} --images {params.source:q} {params.limit} {params.dedupe} {params.options} "
            "--device {params.device:q} -q -o {output:q} > {log:q} 2>&1",
            threads=True,
        )


# Beyond the paper: project a text model's tokens on the configured corpus onto all its modes; the top passages per
# (layer, head, mode, sign) with the query and key positions of their best pair. A model's `text` entry takes fewer
# passages or tokens for it alone (models.NAME.text: passages, max_tokens; recorded with its config section).
rule text_project:
    input:
        manifest="results/weights/{model}.json",
        modes="results/modes/{model}.zarr",
    output:
        directory("results/text_projections/{model}/{corpus}.zarr"),
    params:
        config_keys=config_keys(["models", "{model}"], ["texts", "{corpus}"], requests.TextRequest),
        spec=model_spec,
        source=lambda w: config["texts"][w.corpus]["source"],
        limit=lambda w: text_limit_option(w.model, w.corpus),
        options=pass_options(requests.TextRequest, max_tokens=OPTIONS.text_max_tokens),
        device=config["analysis"]["device"],
    threads: project_resources("threads")
    resources:
        mem_mb=project_resources("mem_mb"),
        runtime=project_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/text_project/{model}/{corpus}.log",
    benchmark:
        "results/benchmarks/text_project/{model}/{corpus}.tsv"
    shell:
        qkdissect(
            "project-text {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} "
            "--modes {input.modes:q} --corpus {params.source:q} {params.limit} {params.options} "
            "--device {params.device:q} -o {output:q} > {log:q} 2>&1",
            threads=True,
        )
