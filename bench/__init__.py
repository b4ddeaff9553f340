"""glasscuda's benchmark suite (pytest-benchmark).

Run it with ``python -m pytest bench/`` or, for the report with every peer
library timed in its own process, ``python -m bench.report``. The default
``python -m pytest`` run (``testpaths = ["tests"]``) never collects it.

Modules
    common            the binary network's shapes, the peers, backends and checks
    reference_model   the binary network written with glasscuda.reference ops
    bench_kernels     each kernel at the network's real shapes
    bench_memory      large array copies: the all-core bandwidth the kernels are measured against
    bench_step        one training step and inference throughput of the whole network
    report            runs the suite peer by peer and writes bench/results/report.md
    quality           trains a recipe on a real dataset over seeds: bench/results/quality-<name>.md
"""
