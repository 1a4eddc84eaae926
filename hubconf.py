"""torch.hub entry points, one per registered model, made from the model registry (no second list):

    model = torch.hub.load("<owner>/<repo>", "crestereo_base", weights="MEGVII_V1")

builds the model exactly as ``models.get_model(name, weights=...)`` does; ``weights`` takes what ``get_model``
takes (an enum member or its name, or a local ``.pth``), other keyword arguments go to the model's builder.
"""

import models as _models

dependencies = ["torch", "torchvision"]


def _entry_point(name: str):
    def entry_point(weights=None, progress: bool = True, **kwargs):
        return _models.get_model(name, weights=weights, progress=progress, **kwargs)

    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__doc__ = f"``models.get_model({name!r}, weights=weights, **kwargs)``."
    return entry_point


globals().update({_name: _entry_point(_name) for _name in _models.list_models()})
