"""Everything that streams a dataset: the batch stream (``stream``), the per-unit scores of a batch (``scorer``),
the running top-K state and its exact merge (``state``, ``topk``), checkpoints (``checkpoint``) and the
``torchrun`` sharding and all-gather (``distributed``). mine, evolve and shortcuts read their images through
``DatasetStream``. Import the modules themselves: this package imports nothing on its own, so that reading a
stream does not load the capture machinery.
"""
