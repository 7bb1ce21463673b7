"""A text model's own tokenizer."""

from __future__ import annotations

from typing import Any

from ..errors import QKDissectError
from .sources.base import LoadedModel, hub_offline


def tokenizer_for(loaded: LoadedModel) -> Any:
    """The model's own tokenizer: from the directory of its weights when it has one there, else from the hub id
    (the Hugging Face cache; ``HF_HUB_OFFLINE`` respected). Decoders without a pad token pad with EOS."""
    from transformers import AutoTokenizer

    wdir = loaded.weights_path.parent if loaded.weights_path is not None else None
    local = wdir is not None and any((wdir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
    target = str(wdir) if local else (str(loaded.spec.weights) if loaded.spec.weights else loaded.spec.name)
    try:
        tok = AutoTokenizer.from_pretrained(target, local_files_only=hub_offline() or local)
    except (OSError, ValueError) as e:
        raise QKDissectError(
            f"no tokenizer for {loaded.spec} at {target}: {e}. Text models need their tokenizer files next to "
            "the weights (save_pretrained of the tokenizer) or in the Hugging Face cache."
        ) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
