"""Publishing model versions into a TF Serving-style base path, as a deployment would."""

from __future__ import annotations

import os
import shutil

import beam_infer as bi
from pipelines import models
from tests.support import model_zoo


def publish(base: str, version: int, *, corrupt: bool = False, drop: tuple[str, ...] = (),
            input_alias: str | None = None) -> str:
    """Builds version ``version`` (y = 5·version·x) aside, then moves it into ``base``.

    ``input_alias`` names the signature's input something other than ``examples`` (a
    version the pipeline cannot feed).
    """
    staging = os.path.join(os.path.dirname(base), f"staging-{version}")
    if input_alias is None:
        models.build_multiplier_model(staging, 5.0 * version)
    else:
        model_zoo.renamed_input_examples(staging, factor=5.0 * version, alias=input_alias)
    bi.write_warmup_requests(staging, model_zoo.make_examples([1.0]))
    if corrupt:  # the good bytes are kept in good-<version> to repair it later
        data = os.path.join(staging, "variables", "variables.data-00000-of-00001")
        shutil.copy(data, os.path.join(os.path.dirname(base), f"good-{version}"))
        size = os.path.getsize(data)
        with open(data, "wb") as f:
            f.write(b"\x7f" * size)
    for name in drop:  # held aside, as if still being copied
        held = os.path.join(os.path.dirname(base), f"held-{version}", *name.split("/"))
        os.makedirs(os.path.dirname(held), exist_ok=True)
        os.rename(os.path.join(staging, *name.split("/")), held)
    target = os.path.join(base, str(version))
    os.rename(staging, target)
    return target
