"""The base of every public model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """A pydantic model whose validators and serializers are built when it is first used, not
    when its module is imported: a command that shows one job does not pay for every model
    (about a quarter of ``provision status``'s imports)."""

    model_config = ConfigDict(defer_build=True)
