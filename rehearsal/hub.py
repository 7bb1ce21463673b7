"""Stand-ins for the paper's weights, built offline: a Hugging Face hub cache holding the 13 hub repositories of
:mod:`rehearsal.hub_repos` (randomly initialised models of exactly the classes and configurations those
repositories name, with their own ``config.json`` and ``preprocessor_config.json``), and the SimMIM / I-JEPA
checkpoints in their upstream layouts. Only the tensor values are made up; ``depth`` may shorten every model to a
few blocks for a quick rehearsal (nothing else changes).

The cache has the layout ``huggingface_hub`` writes: ``$HF_HOME/hub/models--ORG--NAME/{refs/main,
snapshots/<revision>/<file>, blobs/<etag>}``, every snapshot file a relative link to its blob (named by its sha256
for the weights, which the hub stores in LFS, and by its git blob hash for the JSON files). With
``HF_HOME=<root>`` and ``HF_HUB_OFFLINE=1``, the package loads them through its normal specs
(``hf:google/vit-base-patch16-224``, ...), and with ``QKDISSECT_DATA=<data>`` the local checkpoints through the
catalogue's ``simmim:weights/...`` and ``ijepa:weights/...#part`` specs.

    python -m rehearsal.hub --hf-home /tmp/hf --data /tmp/data --depth 2
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .hub_repos import HUB_REPOS, LOCAL_CHECKPOINTS, PYTORCH_BIN, SAFETENSORS, HubRepo, LocalCheckpoint

#: the weights files the hub keeps in LFS (their blob is named by the sha256 of the content)
LFS_SUFFIXES = (".safetensors", ".bin")


# ----------------------------------------------------------------------------------------------- hub repos
def repo_config(repo: HubRepo, depth: int | None = None) -> dict[str, Any]:
    """The repository's ``config.json`` with ``num_hidden_layers`` set to ``depth`` (both CLIP towers)."""
    cfg = copy.deepcopy(repo.config)
    if depth is not None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        for part in (cfg, cfg.get("text_config"), cfg.get("vision_config")):
            if part is not None and "num_hidden_layers" in part:
                part["num_hidden_layers"] = depth
    return cfg


def _seed(name: str, seed: int) -> int:
    return (zlib.crc32(name.encode()) + seed) % (2**31)


def _fill_random_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random values for every parameter: LayerNorm gains ~ 1 + N(0, 0.05), everything else ~ N(0, 0.02) (biases
    too, so that no check passes because a bias is 0 or a gain is 1)."""
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=generator)
                gain = isinstance(module, torch.nn.LayerNorm) and name == "weight"
                p.copy_(1.0 + 0.05 * noise if gain else 0.02 * noise)


def meta_model(repo: HubRepo, depth: int | None = None) -> Any:
    """The model of the class and configuration ``repo``'s ``config.json`` names, on the meta device (shapes, no
    values)."""
    import transformers

    cfg_json = repo_config(repo, depth)
    fields = {k: v for k, v in cfg_json.items() if k != "model_type"}
    config = transformers.AutoConfig.for_model(cfg_json["model_type"], **fields)
    cls = getattr(transformers, repo.architecture)
    with torch.device("meta"):
        return cls(config, add_pooling_layer=False) if not repo.pooler else cls(config)


def stand_in_model(repo: HubRepo, depth: int | None = None, seed: int = 0) -> Any:
    """A model of the class and configuration ``repo``'s ``config.json`` names, every parameter random (built on
    the meta device and filled once: fast). Its state dict is what the repository's files hold; non-persistent
    buffers are left unset, so it is for saving, not for running."""
    model = meta_model(repo, depth).to_empty(device="cpu")
    buffers = set(model.state_dict()) - {n for n, _ in model.named_parameters()}
    if buffers:  # a persistent buffer would need its real value, not a random one
        raise NotImplementedError(f"{repo.repo_id}: persistent buffers {sorted(buffers)} are not filled")
    _fill_random_(model, torch.Generator().manual_seed(_seed(repo.repo_id, seed)))
    return model.eval()


def legacy_buffers(repo: HubRepo, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Buffers the published checkpoints still hold although current transformers no longer saves them: the
    CLIP repositories were written when ``position_ids`` was a persistent buffer of both embeddings."""
    if repo.family != "CLIP":
        return {}
    vision = config["vision_config"]
    n_vision = (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    n_text = config["text_config"]["max_position_embeddings"]
    return {
        "text_model.embeddings.position_ids": torch.arange(n_text)[None],
        "vision_model.embeddings.position_ids": torch.arange(n_vision)[None],
    }


def _json_bytes(obj: dict[str, Any]) -> bytes:
    """JSON as transformers writes it (two-space indent, sorted keys, a final newline)."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def write_repo_files(repo: HubRepo, folder: Path, depth: int | None = None, seed: int = 0) -> list[str]:
    """The repository's files in ``folder``: ``config.json``, ``preprocessor_config.json`` and its weights files
    (``save_pretrained`` for ``model.safetensors``, a pickled state dict for ``pytorch_model.bin``, as the
    repositories' converters wrote them: under the checkpoint's names, which ``save_pretrained`` writes, not the
    names of the model's modules in memory); returns the file names."""
    from safetensors.torch import load_file

    model = stand_in_model(repo, depth, seed)
    config = repo_config(repo, depth)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state.update(legacy_buffers(repo, config))
    model.save_pretrained(folder, state_dict=state)
    if PYTORCH_BIN in repo.weights:
        torch.save(load_file(folder / SAFETENSORS), folder / PYTORCH_BIN)
    for extra in set(os.listdir(folder)) - set(repo.weights):  # ours is the repository's config.json
        (folder / extra).unlink()
    (folder / "config.json").write_bytes(_json_bytes(config))
    (folder / "preprocessor_config.json").write_bytes(_json_bytes(repo.preprocessor))
    return sorted(os.listdir(folder))


def _etag(path: Path) -> str:
    """The name of a file's blob in the cache: sha256 of an LFS file, the git blob sha1 of any other."""
    data = path.read_bytes()
    if path.name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _place_snapshot(staged: Path, repo_dir: Path, repo_id: str) -> str:
    """Move the files of ``staged`` into ``repo_dir`` as the hub cache holds them; returns the revision (a
    deterministic 40-hex name: the same files give the same revision)."""
    etags = {name: _etag(staged / name) for name in sorted(os.listdir(staged))}
    revision = hashlib.sha1(json.dumps([repo_id, etags], sort_keys=True).encode()).hexdigest()
    blobs, snapshot = repo_dir / "blobs", repo_dir / "snapshots" / revision
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, etag in etags.items():
        os.replace(staged / name, blobs / etag)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", etag))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return revision


@contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """A fresh folder beside ``target`` that replaces it when the block succeeds (removed when it fails)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            shutil.rmtree(old)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def hub_repos(repos: Iterable[str] | None = None) -> list[HubRepo]:
    """The hub repositories named by id (``google/vit-base-patch16-224``) or short name, or all 13."""
    if repos is None:
        return list(HUB_REPOS.values())
    by_key = {r.key: r for r in HUB_REPOS.values()}
    out = []
    for name in repos:
        repo = HUB_REPOS.get(name) or by_key.get(name)
        if repo is None:
            raise ValueError(f"{name!r} is not one of the paper's hub repositories: {sorted(HUB_REPOS)}")
        out.append(repo)
    return out


def build_hub_cache(
    root: str | Path, depth: int | None = None, repos: Iterable[str] | None = None, seed: int = 0
) -> Path:
    """Build the stand-in hub repositories under ``root/hub`` (the cache of ``HF_HOME=root``); returns ``root``.
    Each repository folder is replaced whole, or left as it was when building it fails."""
    root = Path(root)
    for repo in hub_repos(repos):
        org, name = repo.repo_id.split("/")
        repo_dir = root / "hub" / f"models--{org}--{name}"
        with _atomic_dir(repo_dir) as tmp:
            staged = tmp / ".staged"
            staged.mkdir()
            write_repo_files(repo, staged, depth, seed)
            _place_snapshot(staged, tmp, repo.repo_id)
            staged.rmdir()
    return root


def link_stand_ins(source: str | Path, hf_home: str | Path, weights_dir: str | Path, depth: int | None,
                   repos: Iterable[str] | None = None) -> None:  # fmt: skip
    """Hard-link stand-ins built earlier (``source/hf``: :func:`build_hub_cache`; ``source/data/weights``:
    :func:`build_local_checkpoints`) into ``hf_home`` and ``weights_dir`` instead of building them again: the same
    files, as the builds are deterministic (build both at once: the repositories' ``config.json`` are checked
    against ``depth``, the checkpoints are taken as they are). Refused in one line where a repository is missing or
    of another depth. Nothing a rehearsal does writes to a file it did not make, so the source stays as built."""
    source = Path(source)
    for repo in hub_repos(repos):
        org, name = repo.repo_id.split("/")
        folder = f"models--{org}--{name}"
        configs = list((source / "hf" / "hub" / folder / "snapshots").glob("*/config.json"))
        if len(configs) != 1 or configs[0].read_bytes() != _json_bytes(repo_config(repo, depth)):
            raise SystemExit(f"{source}: no stand-in of {repo.repo_id} at depth {depth} to link; build them with "
                             "python -m rehearsal.hub --hf-home DIR/hf --data DIR/data --depth N")  # fmt: skip
        target = Path(hf_home) / "hub" / folder
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source / "hf" / "hub" / folder, target, symlinks=True, copy_function=os.link)
    Path(weights_dir).mkdir(parents=True, exist_ok=True)
    for c in LOCAL_CHECKPOINTS.values():
        target = Path(weights_dir) / c.filename
        target.unlink(missing_ok=True)
        os.link(source / "data" / "weights" / c.filename, target)


# ----------------------------------------------------------------------------------------- local checkpoints
class _Draw:
    """Random tensors of one checkpoint: weights ~ N(0, 0.02), gains ~ 1 + N(0, 0.05), biases ~ N(0, 0.02); on the
    meta device, shapes only (what the checkpoint's size is computed from: :mod:`rehearsal.sizes`)."""

    def __init__(self, seed: int, device: str = "cpu") -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.device = device

    def w(self, *shape: int, std: float = 0.02, mean: float = 0.0) -> torch.Tensor:
        if self.device == "meta":
            return torch.empty(shape, device="meta")
        return mean + std * torch.randn(shape, generator=self.g)

    def norm(self, prefix: str, d: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": self.w(d, std=0.05, mean=1.0), f"{prefix}.bias": self.w(d)}

    def linear(self, prefix: str, d_out: int, d_in: int, bias: bool = True) -> dict[str, torch.Tensor]:
        out = {f"{prefix}.weight": self.w(d_out, d_in)}
        return {**out, f"{prefix}.bias": self.w(d_out)} if bias else out


def relative_position_index(window: int) -> torch.Tensor:
    """BEiT's (SimMIM's) index into the relative position bias table, (W*W + 1)^2 entries with the CLS rows."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    n_rel = (2 * window - 1) ** 2 + 3
    index = np.zeros((window * window + 1,) * 2, dtype=np.int64)
    index[1:, 1:] = rel[..., 0] * (2 * window - 1) + rel[..., 1]
    index[0, :], index[:, 0], index[0, 0] = n_rel - 3, n_rel - 2, n_rel - 1
    return torch.from_numpy(index)


def simmim_state_dict(layout: dict[str, Any], depth: int, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A SimMIM ViT state dict with the key names and shapes of microsoft/SimMIM's ``VisionTransformer``
    (``SimMIM`` wrapper for pretraining: ``encoder.*``, ``encoder.mask_token``, ``decoder.0``)."""
    r = _Draw(seed, device)
    d, heads, patch = layout["embed_dim"], layout["num_heads"], layout["patch_size"]
    window, hidden = layout["img_size"] // patch, d * layout["mlp_ratio"]
    n_rel = (2 * window - 1) ** 2 + 3
    sd = {
        "cls_token": r.w(1, 1, d),
        "patch_embed.proj.weight": r.w(d, 3, patch, patch),
        "patch_embed.proj.bias": r.w(d),
    }
    if layout["shared_rel_pos_bias"]:
        sd["rel_pos_bias.relative_position_bias_table"] = r.w(n_rel, heads)
        sd["rel_pos_bias.relative_position_index"] = relative_position_index(window)
    for i in range(depth):
        b = f"blocks.{i}"
        sd.update({f"{b}.gamma_1": r.w(d, std=0.01, mean=0.1), f"{b}.gamma_2": r.w(d, std=0.01, mean=0.1)})
        sd.update(r.norm(f"{b}.norm1", d))
        sd.update({f"{b}.attn.q_bias": r.w(d), f"{b}.attn.v_bias": r.w(d), f"{b}.attn.qkv.weight": r.w(3 * d, d)})
        if not layout["shared_rel_pos_bias"]:
            sd[f"{b}.attn.relative_position_bias_table"] = r.w(n_rel, heads)
            sd[f"{b}.attn.relative_position_index"] = relative_position_index(window)
        sd.update(r.linear(f"{b}.attn.proj", d, d))
        sd.update(r.norm(f"{b}.norm2", d))
        sd.update({**r.linear(f"{b}.mlp.fc1", hidden, d), **r.linear(f"{b}.mlp.fc2", d, hidden)})
    sd.update(r.norm("fc_norm" if layout["mean_pooling"] else "norm", d))
    if not layout["pretrain"]:
        return {**sd, **r.linear("head", 1000, d)}
    sd = {f"encoder.{k}": v for k, v in sd.items()}
    sd["encoder.mask_token"] = r.w(1, 1, d)
    return {**sd, "decoder.0.weight": r.w(patch * patch * 3, d, 1, 1), "decoder.0.bias": r.w(patch * patch * 3)}


def sincos_pos_embed(d: int, grid: int) -> torch.Tensor:
    """I-JEPA's fixed 2-d sin-cos position embedding (1, grid*grid, d) (``get_2d_sincos_pos_embed``)."""

    def one_axis(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=float) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(grid, dtype=float), np.arange(grid, dtype=float))
    emb = np.concatenate([one_axis(d // 2, gw), one_axis(d // 2, gh)], axis=1)
    return torch.from_numpy(emb).float()[None]


def _ijepa_blocks(r: _Draw, prefix: str, depth: int, d: int, hidden: int) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for i in range(depth):
        b = f"{prefix}.{i}"
        sd.update({**r.norm(f"{b}.norm1", d), **r.linear(f"{b}.attn.qkv", 3 * d, d)})
        sd.update({**r.linear(f"{b}.attn.proj", d, d), **r.norm(f"{b}.norm2", d)})
        sd.update({**r.linear(f"{b}.mlp.fc1", hidden, d), **r.linear(f"{b}.mlp.fc2", d, hidden)})
    return sd


def ijepa_checkpoint(
    layout: dict[str, Any], depth: int, pred_depth: int, seed: int, device: str = "cpu"
) -> dict[str, Any]:
    """An I-JEPA checkpoint as facebookresearch/ijepa's ``train.py`` saves it: encoder, predictor and
    target_encoder state dicts through DistributedDataParallel (``module.``), the optimizer (no steps taken:
    its four parameter groups, empty state), the bfloat16 grad scaler, epoch, loss, batch size, world size, lr."""
    r = _Draw(seed, device)
    d, patch, pd = layout["embed_dim"], layout["patch_size"], layout["pred_dim"]
    grid, ratio = layout["img_size"] // patch, layout["mlp_ratio"]

    def encoder() -> dict[str, torch.Tensor]:
        sd = {"patch_embed.proj.weight": r.w(d, 3, patch, patch), "patch_embed.proj.bias": r.w(d)}
        sd["pos_embed"] = sincos_pos_embed(d, grid)
        return {**sd, **_ijepa_blocks(r, "blocks", depth, d, d * ratio), **r.norm("norm", d)}

    pred = {**r.linear("predictor_embed", pd, d), "mask_token": r.w(1, 1, pd)}
    pred["predictor_pos_embed"] = sincos_pos_embed(pd, grid)
    pred.update({**_ijepa_blocks(r, "predictor_blocks", pred_depth, pd, pd * ratio), **r.norm("predictor_norm", pd)})
    pred.update(r.linear("predictor_proj", d, pd))
    groups = [
        {"lr": 1e-6, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.4, "amsgrad": False, "params": []},
        {"lr": 1e-6, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.4, "amsgrad": False, "params": []},
        {"lr": 1e-6, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "WD_exclude": True, "params": []},
        {"lr": 1e-6, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "WD_exclude": True, "params": []},
    ]
    module = lambda sd: {f"module.{k}": v for k, v in sd.items()}  # noqa: E731
    return {
        "encoder": module(encoder()),
        "predictor": module(pred),
        "target_encoder": module(encoder()),
        "opt": {"state": {}, "param_groups": groups},
        "scaler": {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "growth_interval": 2000,
            "_growth_tracker": 0,
        },
        "epoch": 300,
        "loss": 0.1,
        "batch_size": 128,
        "world_size": 16,
        "lr": 0.001,
    }


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _checkpoint_writers(depth: int | None, seed: int) -> dict[str, Callable[[LocalCheckpoint], Any]]:
    def simmim(c: LocalCheckpoint) -> Any:
        sd = simmim_state_dict(c.layout, depth or c.layout["depth"], _seed(c.key, seed))
        return {"model": sd, "epoch": 799 if c.layout["pretrain"] else 99}

    def ijepa(c: LocalCheckpoint) -> Any:
        lay = c.layout
        return ijepa_checkpoint(lay, depth or lay["depth"], depth or lay["pred_depth"], _seed(c.key, seed))

    return {"SimMIM": simmim, "I-JEPA": ijepa}


def build_local_checkpoints(weights_dir: str | Path, depth: int | None = None, seed: int = 0) -> dict[str, Path]:
    """Write the SimMIM pretrain / finetune ``.pth`` files and the I-JEPA ``.pth.tar`` (encoder, predictor,
    target_encoder) under ``weights_dir`` with their released names (the catalogue's specs read
    ``$QKDISSECT_DATA/weights/<name>``); returns {catalogue key: file}, the I-JEPA predictor included."""
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    writers = _checkpoint_writers(depth, seed)
    out: dict[str, Path] = {}
    for c in LOCAL_CHECKPOINTS.values():
        path = Path(weights_dir) / c.filename
        _atomic_save(writers[c.family](c), path)
        out[c.key] = path
    out["ijepa-vith14-predictor"] = out["ijepa-vith14-encoder"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rehearsal.hub", description=__doc__.split("\n\n")[0])
    p.add_argument("--hf-home", required=True, help="the HF_HOME to build (its hub/ cache)")
    p.add_argument("--data", help="a QKDISSECT_DATA folder: SimMIM and I-JEPA stand-ins go to DATA/weights/")
    p.add_argument("--depth", type=int, help="blocks per model (default: each model's own)")
    p.add_argument("--repos", nargs="*", help="hub repositories to build (default: all 13)")
    args = p.parse_args(argv)
    build_hub_cache(args.hf_home, args.depth, args.repos)
    if args.data:
        build_local_checkpoints(Path(args.data) / "weights", args.depth)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
