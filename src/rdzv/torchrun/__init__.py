"""The torchrun adapter: ``torchrun --rdzv-backend=rdzv``.

``plugin`` is the torch-free entry point torch loads, ``conf`` parses torchrun's
``--rdzv-endpoint`` and ``--rdzv-conf``, ``handler`` is torch's
``RendezvousHandler`` over :class:`rdzv.Rendezvous` (the only module in rdzv
that imports torch). This package itself imports nothing from torch.
"""
