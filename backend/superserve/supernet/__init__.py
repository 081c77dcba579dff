"""The SuperNet and its SubNetAct operators (LayerSelect, WeightSlice, SubnetNorm)."""

from .network import ElasticResNet, compile_plan, count_params
from .space import MNIST_RESNET, OFA_RESNET50, SPACES, SearchSpace, SubNet

__all__ = ["ElasticResNet", "compile_plan", "count_params", "SearchSpace", "SubNet", "SPACES", "MNIST_RESNET",
           "OFA_RESNET50"]
