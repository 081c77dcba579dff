"""Triton adapter for a remote SuperServe worker: run each request's (SubNet, batch) on the SuperNet in place.

The router (another tritonserver's ``superserve`` model) sends one request per batch, its SubNet index in the
request parameter ``subnet``; this model answers the logits. Parameters: ``artefacts`` (the model version folder
holding the SuperNet, relative to this model's folder), ``num_threads`` (torch threads), ``device`` (auto follows
the instance_group).
"""

import json
from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils

from superserve.serving.config import resolve_device
from superserve.serving.runner import SubnetRunner
from superserve.supernet.artefacts import load_supernet


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        folder = (Path(args["model_repository"]) / params.get("artefacts", "1")).resolve()
        try:
            torch.set_num_threads(int(params.get("num_threads", "1")))
            net, profile = load_supernet(folder)
        except (ValueError, FileNotFoundError) as exc:
            raise pb_utils.TritonModelException(f"model {args['model_name']!r} failed to load: {exc}") from exc
        device = resolve_device(params.get("device", "auto"), args["model_instance_kind"],
                                args["model_instance_device_id"])
        self.runner = SubnetRunner(net, profile, torch.device(device))
        self.runner.warm_up()
        self.subnets = len(profile["subnets"])
        pb_utils.Logger.log_info(f"{args['model_name']}: a worker for {self.subnets} SubNets of {folder} on {device}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                subnet = json.loads(request.parameters() or "{}").get("subnet")
                if not isinstance(subnet, int) or not 0 <= subnet < self.subnets:
                    raise ValueError(f"parameter subnet must be an integer in 0..{self.subnets - 1}, got {subnet!r}")
                images = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
                if images.shape[1:] != self.runner.input_shape:
                    raise ValueError(f"INPUT must be [batch, {', '.join(map(str, self.runner.input_shape))}], got "
                                     f"{list(images.shape)}")
                logits = self.runner.run(subnet, images)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("LOGITS", logits)]))
            except Exception as exc:  # this request alone fails; the router answers its requests
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)))
        return responses
