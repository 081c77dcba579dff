"""Running Triton: the server from the nvidia-pytriton wheel, the supervisor that restarts it when a Python stub
dies, ``make serve``, and the export of a model repository that other Triton servers load."""
