# Beyond the paper: what removing a mode does. For each model of figures.ablation, the modes the `ablation` section
# selects are ablated one at a time on projections.images (the first ablation.limit images, with the set's dedupe):
# each mode's term taken out of its head's attention logits, the head's attention change (and, unless
# ablation.attention_only, the model's output change) on the set and on the mode's top images of its projections
# store (qkdissect.passes.ablation). The store feeds the ablation figure, the mode atlas and our claim A1.


def _ablation_models():
    """The models of figures.ablation, each checked: an image model the pass runs (a timm vision transformer,
    as timm:... and imgfocus:... specs load them, without rotary embeddings)."""
    names = figure_models("ablation")
    text = [m for m in names if m in TEXT_MODELS]
    if text:
        raise WorkflowError(f"config: figures.ablation names text models {text}; the ablation pass runs image models")
    other = [m for m in names if spec_of(m).partition(":")[0] not in ("timm", "imgfocus") or is_rotary(m)]
    if other:
        raise WorkflowError(
            f"config: figures.ablation names {other}, which the ablation pass does not run yet: it runs timm vision "
            "transformers without rotary embeddings (specs timm:... and imgfocus:...); leave them out (a list of "
            "names instead of 'all')"
        )
    if names and config["projections"]["images"] not in config["images"]:
        raise WorkflowError(
            f"config: projections.images is {config['projections']['images']!r}, which is not one of the image "
            f"sets under images: {list(config['images'])}"
        )
    return names


#: the models whose modes are ablated (figures.ablation)
ABLATION_MODELS = _ablation_models()


def ablation_store(model):
    return f"results/ablation/{model}/{config['projections']['images']}.zarr"


def ablation_limit(images):
    """`--limit N` of the ablation pass: the smaller of the image set's limit and ablation.limit."""
    limits = [n for n in (config["images"][images]["limit"], config["ablation"]["limit"]) if n]
    return f"--limit {min(limits)}" if limits else ""


def ablation_select():
    """`--select ...` of the ablation pass, each item quoted."""
    given = config["ablation"]["select"]
    return "--select " + " ".join(shlex.quote(s) for s in ([given] if isinstance(given, str) else given))


def ablation_options():
    """The pass's switches: --attention-only and --mean, when the config asks for them."""
    on = [("--attention-only", "attention_only"), ("--mean", "mean")]
    return " ".join(flag for flag, key in on if config["ablation"][key])


def ablation_claims_stores():
    """Claim A1's role: the ablation stores of the models of figures.ablation (made with their projections)."""
    return {"ablation": [ablation_store(m) for m in ABLATION_MODELS]} if ABLATION_MODELS else {}


def ablation_targets():
    """What `all` makes for the ablation beyond its figure's stores: the projections stores it reads."""
    return [projections_store(m) for m in ABLATION_MODELS]


rule ablate:
    input:
        manifest="results/weights/{model}.json",
        modes="results/modes/{model}.zarr",
        projections="results/projections/{model}/{images}.zarr",
    output:
        directory("results/ablation/{model}/{images}.zarr"),
    params:
        config_keys=config_keys(["models", "{model}"], ["images", "{images}"], ["ablation"], *PROJECT_KEYS),
        spec=model_spec,
        source=lambda w: config["images"][w.images]["source"],
        limit=lambda w: ablation_limit(w.images),
        dedupe=lambda w: dedupe_option(w.images),
        select=ablation_select(),
        options=ablation_options(),
        batch_size=config["ablation"]["batch_size"],
        workers=workers_option(),
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
            "{params.dedupe} {params.select} {params.options} --batch-size {params.batch_size:q} {params.workers} "
            "--device {params.device:q} -q -o {output:q} > {log:q} 2>&1",
            threads=True,
        )
