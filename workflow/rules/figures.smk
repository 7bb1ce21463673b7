# Every figure is a parameterised notebook (notebooks/, committed without outputs) run by papermill; the executed
# copy under results/notebooks/ is the record of how the figure was made. The notebook saves PNG + PDF with its
# provenance in the file metadata and in a .provenance.json beside them. Plotting only reads stores: what an image
# or text figure draws (its modes, their top images or passages with their maps, the crops) is computed before it
# by the `maps` rule, so restyling a figure never loads a model, decodes an image or reruns a pass.
#
# The figure rules are made from the figure table, workflow/figures.yaml: one rule per row, named by its key.


# What one row of an image or text figure draws (qkdissect.passes.maps): the request comes from the figure table
# and the row's config entry; the store is results/maps/<figure>/<row>-<model>.zarr.
rule maps:
    input:
        manifest="results/weights/{model}.json",
        modes="results/modes/{model}.zarr",
        scores="results/scores/{model}.zarr",
        source=maps_source,
    output:
        directory("results/maps/{stem}/{index}-{model}.zarr"),
    params:
        config_keys=maps_config_keys,
        spec=model_spec,
        request=maps_request,
        device=config["analysis"]["device"],
    wildcard_constraints:
        stem="|".join(re.escape(s) for s in sorted({m[0] for m in MAPS})) or "(?!)x",
        index=r"\d+",
    threads: project_resources("threads")
    resources:
        mem_mb=project_resources("mem_mb"),
        runtime=project_resources("runtime"),
        gpu=1 if uses_gpu() else 0,
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/maps/{stem}/{index}-{model}.log",
    benchmark:
        "results/benchmarks/maps/{stem}/{index}-{model}.tsv"
    shell:
        qkdissect(
            "maps {params.spec:q} --name {wildcards.model:q} --manifest {input.manifest:q} --modes {input.modes:q} "
            "--scores {input.scores:q} --source {input.source:q} --request {params.request:q} "
            "--device {params.device:q} -q -o {output:q} > {log:q} 2>&1",
            threads=True,
        )


for _key, _fig in FIGURES.items():
    _stem = f"results/figures/{_fig['output']}"

    rule:
        name:
            _key
        localrule: True
        input:
            unpack(figure_inputs(_key)),
        output:
            png=report(
                f"{_stem}.png",
                caption=f"../report/{_fig['caption']}",
                category=REPORT_CATEGORIES[_fig["category"]],
                labels={"figure": _fig["label"], "page": "figure"},
            ),
            pdf=f"{_stem}.pdf",
            provenance=f"{_stem}.provenance.json",
            # beside its figure (same category; its caption links to it)
            provenance_html=report(
                f"{_stem}.provenance.html",
                caption="../report/provenance.rst",
                category=REPORT_CATEGORIES[_fig["category"]],
                labels={"figure": _fig["label"], "page": "provenance"},
            ),
            notebook=f"results/notebooks/{_fig['output']}.ipynb",
        params:
            config_keys=figure_config_keys(_key),
            notebook=figure_parameters(_key),
            options=figure_options(_key),  # the rerun trigger of a restyle (notebook depends on the input)
        wildcard_constraints:
            **figure_wildcards(_key),
        conda:
            "../envs/qkdissect.yaml"
        log:
            f"results/logs/figures/{_fig['output']}.log",
        benchmark:
            f"results/benchmarks/figures/{_fig['output']}.tsv"
        shell:
            papermill_command()


# The results folder as an RO-Crate (RO-Crate 1.1, Process Run Crate profile, built with ro-crate-py): every
# figure, store, weights manifest and executed notebook (and the mode atlas) with its sha256, the config files in force and this
# workflow (copied into results/run/), the inputs recorded in their provenance, and the action that made each.
# `qkdissect crate results --check-only` validates it offline with roc-validator.
rule crate:
    localrule: True
    input:
        all_figures(),
        "results/claims/claims.json",
        ATLAS_OUTPUTS,
    output:
        metadata="results/ro-crate-metadata.json",
        run=directory("results/run"),
    params:
        config_keys=config_keys(),
        results=lambda wildcards, output: os.path.dirname(output[0]),
        # the workflow's own folder, copied into the crate (none for a remote source: "")
        workflow=str(REPO / "workflow") if REPO is not None else "",
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/crate.log",
    shell:
        qkdissect("crate {params.results:q} --root . --workflow {params.workflow:q} > {log:q} 2>&1")
