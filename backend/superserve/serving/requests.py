"""Per-request checks: parameters (``slo_ms``, ``subnet``, ``min_accuracy``) and input values.

Every failure raises ``RequestError`` with a message meant for the client; the caller answers that
request alone with it (HTTP 400 / gRPC INVALID_ARGUMENT) and keeps serving the others.
Unknown parameters are ignored (Triton and HTTP proxies add their own).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from ..scheduler.profile import Profile

__all__ = ["RequestError", "RequestSpec", "SpecCache", "parse_parameters", "read_requests", "check_images",
           "check_finite", "SLO_HEADER"]

SLO_HEADER = "x-slo-ms"  # forwarded by tritonserver's --http/grpc-header-forward-pattern


class RequestError(ValueError):
    """The request is malformed; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class RequestSpec:
    slo_ns: int
    lo: int  # least accurate SubNet index allowed
    hi: int  # most accurate SubNet index allowed


def _number(name: str, value) -> float:
    if isinstance(value, bool):
        raise RequestError(f"parameter {name!r} must be a number, got a boolean")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise RequestError(f"parameter {name!r} must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"parameter {name!r} must be a finite number, got {value!r}")
    return float(value)


def parse_parameters(parameters_json: str, profile: Profile, default_slo_ms: float, max_slo_ms: float) -> RequestSpec:
    try:
        params = json.loads(parameters_json) if parameters_json else {}
    except json.JSONDecodeError:
        raise RequestError("request parameters are not valid JSON") from None
    if not isinstance(params, dict):
        raise RequestError("request parameters must be a JSON object")
    raw_slo = params.get("slo_ms", params.get(SLO_HEADER, default_slo_ms))
    slo_ms = _number("slo_ms", raw_slo)
    if slo_ms <= 0:
        raise RequestError(f"slo_ms must be > 0, got {slo_ms:g}")
    if slo_ms > max_slo_ms:
        raise RequestError(f"slo_ms {slo_ms:g} exceeds this model's maximum of {max_slo_ms:g} ms")
    lo, hi = 0, profile.size - 1
    if "subnet" in params:
        value = _number("subnet", params["subnet"])
        if value != int(value) or not 0 <= value < profile.size:
            raise RequestError(f"subnet must be an integer in 0..{profile.size - 1}, got {params['subnet']!r}")
        lo = hi = int(value)
    if "min_accuracy" in params:
        floor = _number("min_accuracy", params["min_accuracy"])
        if not 0.0 <= floor <= 1.0:
            raise RequestError(f"min_accuracy must be within [0, 1], got {floor:g}")
        first = profile.lowest_index_with_accuracy(floor)
        if first is None:
            best = max(s.accuracy for s in profile.subnets)
            if floor > best:
                raise RequestError(f"min_accuracy {floor:g} is above every SubNet (the most accurate has {best:.4f})")
            raise RequestError(f"min_accuracy {floor:g} is above the top SubNet's accuracy "
                               f"({profile.subnets[-1].accuracy:.4f}); ask for at most that")
        if first > hi:
            raise RequestError(f"subnet {hi} has accuracy {profile.subnets[hi].accuracy:.4f}, below min_accuracy "
                               f"{floor:g}")
        lo = max(lo, first)
    return RequestSpec(int(slo_ms * 1e6), lo, hi)


class SpecCache:
    """``parse_parameters`` once per distinct parameters text: clients repeat the same few. Bounded."""

    def __init__(self, profile: Profile, default_slo_ms: float, max_slo_ms: float, size: int = 1024) -> None:
        self._profile, self._default_slo_ms, self._max_slo_ms = profile, default_slo_ms, max_slo_ms
        self._size = size
        self._specs: dict[str, RequestSpec | str] = {}  # parameters JSON -> RequestSpec or the error's text

    def get(self, parameters_json: str) -> RequestSpec:
        spec = self._specs.get(parameters_json)
        if spec is None:
            try:
                spec = parse_parameters(parameters_json, self._profile, self._default_slo_ms, self._max_slo_ms)
            except RequestError as exc:
                spec = str(exc)
            if len(self._specs) >= self._size:
                self._specs.clear()
            self._specs[parameters_json] = spec
        if isinstance(spec, str):
            raise RequestError(spec)
        return spec


def read_requests(handles, transport, specs: SpecCache, input_shape: tuple[int, ...], max_batch: int):
    """Each request's input and parameters, checked: (valid, invalid) as lists of (slot, handle, images, spec)
    and of (slot, RequestError). ``transport`` reads a request (``serving.core.Transport``)."""
    valid, invalid = [], []
    for slot, handle in enumerate(handles):
        images = transport.images(handle)
        try:
            spec = specs.get(transport.parameters(handle))
            check_images(images, input_shape, max_batch)
        except RequestError as exc:
            invalid.append((slot, exc))
            continue
        valid.append((slot, handle, images, spec))
    return valid, invalid


_FP32 = np.dtype(np.float32)


def check_images(images: np.ndarray, input_shape: tuple[int, ...], max_batch: int) -> None:
    """The input's type and shape. Its values are checked by ``check_finite``, once per batch."""
    if images.dtype != _FP32:
        raise RequestError(f"INPUT must be FP32, got {images.dtype}")
    if images.ndim != len(input_shape) + 1 or tuple(images.shape[1:]) != tuple(input_shape):
        raise RequestError(f"INPUT must have shape [batch, {', '.join(map(str, input_shape))}], got {list(images.shape)}")
    if images.shape[0] == 0:
        raise RequestError("INPUT holds an empty batch")
    if images.shape[0] > max_batch:
        raise RequestError(f"INPUT batch {images.shape[0]} exceeds the maximum of {max_batch}")


def check_finite(images: np.ndarray) -> None:
    if not np.isfinite(images).all():
        raise RequestError("INPUT contains NaN or Inf values")
