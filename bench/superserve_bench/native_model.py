"""Plain Triton: ONE fixed SubNet behind Triton's own dynamic batcher, written the way Triton's examples are.

This is what a user runs instead of SuperServe (the paper's Clipper+ baseline): the SubNet is extracted into a
standalone PyTorch network at load (plain modules, copied weights: no SubNetAct), ``execute()`` runs the whole
batch Triton hands it and returns the list of responses. The benchmarks load it from a generated model
repository (``superserve_bench.repository``), with the config parameter ``subnet`` naming the profile index.
"""

import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from superserve.supernet import family_of
from superserve.supernet.artefacts import load_supernet


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        torch.set_num_threads(int(parameters.get("num_threads", "1")))
        net, profile = load_supernet(Path(args["model_repository"]) / args["model_version"])
        subnet = profile["subnets"][int(parameters["subnet"])]
        self.model = family_of(net.space).extract(net, net.space.parse(subnet["config"])).eval()
        with torch.inference_mode():  # the first passes are slow: not what a benchmark should see
            for batch in (1, int(config["max_batch_size"])):
                self.model(torch.zeros(batch, *profile["input_shape"]))

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy() for request in requests]
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.concatenate(inputs))).numpy()
        responses = []
        offset = 0
        for images in inputs:
            n = images.shape[0]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("LOGITS", logits[offset:offset + n])]))
            offset += n
        return responses
