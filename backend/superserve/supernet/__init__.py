"""SuperNet families (``families`` is their registry) and the SubNetAct operators (LayerSelect, WeightSlice,
SubnetNorm)."""

from .families import FAMILIES, SPACES, Family, family_of, new_supernet
from .network import ElasticResNet, compile_plan, count_params
from .space import MNIST_RESNET, OFA_RESNET50, SearchSpace, SubNet
from .transformer import MNIST_VIT, ElasticTransformer, TransformerSpace, TransformerSubNet

__all__ = ["FAMILIES", "SPACES", "Family", "family_of", "new_supernet", "ElasticResNet", "compile_plan",
           "count_params", "SearchSpace", "SubNet", "MNIST_RESNET", "OFA_RESNET50", "MNIST_VIT", "ElasticTransformer",
           "TransformerSpace", "TransformerSubNet"]
