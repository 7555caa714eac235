"""``rdzv bench``: rendezvous latency, traffic, failure detection and memory against node count.

``harness`` runs one measurement; ``worker`` holds the simulated nodes;
``counting`` counts store operations and bytes per node in the client;
``stores`` starts the store under test; ``torch_runner`` drives torch's c10d
rendezvous the same way; ``report`` summarizes, tabulates and plots.
"""
