"""Whether a model version fits the plan a pipeline was built with.

A pipeline's steps are planned once, from the version chosen when it was built (its
``SignaturePlan``): elements are encoded for that plan's input aliases, dtypes and shapes,
and outputs are read from its output aliases. A version that a worker loads later (a hot
swap, or a worker that starts after a new version landed, or a directory re-exported in
place) is served only if it fits that plan; otherwise elements the previous version
scored would fail. ``differences`` lists what does not fit:

* the operation (predict, classify, regress, multi-inference) and how inputs are fed
  (serialized examples or named tensors) must stay the same;
* every planned signature must be there with the same ``method_name``;
* its inputs must have the same aliases and dtypes; a dimension the plan fixed may stay
  at that size or become variable, a variable one must stay variable, and the rank must
  stay the same where it was known;
* every planned output alias must be there with the same dtype and rank (new outputs
  are allowed: they are added to PredictionLogs, as TF Serving would return them).
"""

from __future__ import annotations

from beam_infer._signatures import Signature, SignaturePlan, TensorInfo


def differences(planned: SignaturePlan, candidate: SignaturePlan) -> list[str]:
    """What in ``candidate`` does not fit ``planned``; empty when it can replace it."""
    found = []
    if candidate.operation is not planned.operation:
        found.append(f"it is served as {candidate.operation.value}, the pipeline as "
                     f"{planned.operation.value}")
    if candidate.feed is not planned.feed:
        found.append(f"its signature is fed {candidate.feed.value}, the pipeline's "
                     f"{planned.feed.value}")
    signatures = {s.name: s for s in candidate.signatures}
    for want in planned.signatures:
        have = signatures.get(want.name)
        if have is None:
            found.append(f"signature {want.name!r} is missing")
            continue
        found.extend(_signature_differences(want, have))
    return found


def _signature_differences(want: Signature, have: Signature) -> list[str]:
    found = []
    name = want.name
    if have.method_name != want.method_name:
        found.append(f"signature {name!r} has method {have.method_name!r}, the pipeline's "
                     f"{want.method_name!r}")
    want_in = {t.alias: t for t in want.inputs}
    have_in = {t.alias: t for t in have.inputs}
    if set(have_in) != set(want_in):
        found.append(f"signature {name!r} takes inputs {_aliases(have_in)}, the pipeline "
                     f"feeds {_aliases(want_in)}")
    for alias in sorted(set(want_in) & set(have_in)):
        problem = _input_problem(want_in[alias], have_in[alias])
        if problem:
            found.append(f"input {alias!r} of {name!r} {problem}")
    have_out = {t.alias: t for t in have.outputs}
    for out in want.outputs:
        other = have_out.get(out.alias)
        if other is None:
            found.append(f"output {out.alias!r} of {name!r} is missing (outputs: "
                         f"{_aliases(have_out)})")
        elif other.dtype != out.dtype or (_rank(other) != _rank(out) and None not in (
                _rank(other), _rank(out))):
            found.append(f"output {out.alias!r} of {name!r} is {other.describe()}, was "
                         f"{out.describe()}")
    return found


def _input_problem(want: TensorInfo, have: TensorInfo) -> str | None:
    if have.dtype != want.dtype:
        return f"is {have.dtype.name}, the pipeline feeds {want.dtype.name}"
    if have.shape is None:
        return None  # takes any shape
    if want.shape is None or len(have.shape) != len(want.shape):
        return f"has shape {_shape(have)}, the pipeline feeds {_shape(want)}"
    for planned, now in zip(want.shape, have.shape, strict=True):
        if now is not None and planned != now:
            return f"has shape {_shape(have)}, the pipeline feeds {_shape(want)}"
    return None


def _rank(info: TensorInfo) -> int | None:
    return None if info.shape is None else len(info.shape)


def _shape(info: TensorInfo) -> str:
    return info.describe().split(":", 1)[1].strip().removeprefix(info.dtype.name)


def _aliases(tensors: dict[str, TensorInfo]) -> str:
    return ", ".join(sorted(tensors)) or "none"
