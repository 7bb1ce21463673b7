# Every figure is a parameterised notebook (notebooks/, committed without outputs) run by papermill; the executed
# copy under results/notebooks/ is the record of how the figure was made. The notebook saves PNG + PDF with its
# provenance in the file metadata and in a .provenance.json beside them. Plotting only reads stores: restyling a
# figure never reruns an SVD.
localrules:
    fig3,
    s1_histograms,
    s2_spectrum,
    s3_ijepa,


rule fig3:
    input:
        notebook=notebook("fig3_layer_cosine.ipynb"),
        scores=fig3_scores,
    output:
        png=report(
            "results/figures/fig3_{variant}_cosine.png",
            caption="../report/fig3.rst",
            category="Fig. 3 layer cosine",
            labels={"figure": "Fig. 3", "variant": "{variant}"},
        ),
        pdf="results/figures/fig3_{variant}_cosine.pdf",
        provenance=report(
            "results/figures/fig3_{variant}_cosine.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. 3 ({variant})"},
        ),
        notebook="results/notebooks/fig3_{variant}_cosine.ipynb",
    params:
        scores=lambda w, input: yaml_param("scores", list(input.scores)),
        styles=yaml_param("styles", model_styles(figure_models("fig3"))),
        weighted=lambda w: w.variant == "weighted",
    wildcard_constraints:
        variant="weighted|unweighted",
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/fig3_{variant}_cosine.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-y {params.scores:q}",
            "-y {params.styles:q}",
            "-p weighted {params.weighted}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule s1_histograms:
    input:
        notebook=notebook("s1_cosine_histograms.ipynb"),
        scores="results/scores/{model}.zarr",
    output:
        png=report(
            "results/figures/s1_cosine_histograms_{model}.png",
            caption="../report/s1.rst",
            category="Fig. S1 cosine histograms",
            labels={"figure": "Fig. S1", "model": "{model}"},
        ),
        pdf="results/figures/s1_cosine_histograms_{model}.pdf",
        provenance=report(
            "results/figures/s1_cosine_histograms_{model}.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. S1 ({model})"},
        ),
        notebook="results/notebooks/s1_cosine_histograms_{model}.ipynb",
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/s1_cosine_histograms_{model}.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-p scores {input.scores:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule s2_spectrum:
    input:
        notebook=notebook("s2_spectrum_grid.ipynb"),
        modes="results/modes/{model}.zarr",
        scores="results/scores/{model}.zarr",
    output:
        png=report(
            "results/figures/s2_spectrum_grid_{model}.png",
            caption="../report/s2.rst",
            category="Fig. S2 spectrum grid",
            labels={"figure": "Fig. S2", "model": "{model}"},
        ),
        pdf="results/figures/s2_spectrum_grid_{model}.pdf",
        provenance=report(
            "results/figures/s2_spectrum_grid_{model}.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. S2 ({model})"},
        ),
        notebook="results/notebooks/s2_spectrum_grid_{model}.ipynb",
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/s2_spectrum_grid_{model}.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-p modes {input.modes:q}",
            "-p scores {input.scores:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )


rule s3_ijepa:
    input:
        unpack(s3_scores),
        notebook=notebook("s3_ijepa.ipynb"),
    output:
        png=report(
            "results/figures/s3_ijepa_encoder_predictor.png",
            caption="../report/s3.rst",
            category="Fig. S3 I-JEPA",
            labels={"figure": "Fig. S3"},
        ),
        pdf="results/figures/s3_ijepa_encoder_predictor.pdf",
        provenance=report(
            "results/figures/s3_ijepa_encoder_predictor.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"figure": "Fig. S3"},
        ),
        notebook="results/notebooks/s3_ijepa_encoder_predictor.ipynb",
    conda:
        "../envs/qkdissect.yaml"
    log:
        "results/logs/figures/s3_ijepa_encoder_predictor.log",
    shell:
        papermill(
            "{input.notebook:q}",
            "{output.notebook:q}",
            "{log:q}",
            "-p encoder {input.encoder:q}",
            "-p predictor {input.predictor:q}",
            "-p output {output.png:q}",
            "-p notebook {input.notebook:q}",
        )
