import importlib

import models


def test_every_lazy_export_resolves_to_its_module():
    for name in models.__all__:
        assert getattr(models, name) is getattr(importlib.import_module(models._EXPORTS[name]), name), name
