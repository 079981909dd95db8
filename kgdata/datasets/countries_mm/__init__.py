"""The bundled countries_mm multimodal knowledge graph (see LICENSE.md)."""
