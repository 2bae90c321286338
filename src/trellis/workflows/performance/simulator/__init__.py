"""A SIMULATOR of vLLM / TGI / SGLang instances, for demos and tests. Not an inference server.

Each simulated instance is a small queueing model (see ``_engine``) behind a real HTTP server
on loopback. It serves ``/metrics`` in the imitated server's metric names and exporter dialect,
with queueing, KV-cache use and latency that respond to the configuration applied through its
admin API (``max_num_seqs``, ``gpu_memory_utilization``, ``enable_prefix_caching``,
``max_num_batched_tokens`` for vLLM; the TGI and SGLang equivalents), and accepts injected
regressions. Nothing in it runs a model; its figures are plausible, not measured.

Run a fleet from the command line::

    python -m trellis.workflows.performance.simulator --instances 4 --server vllm --port-base 8100

or in-process with :class:`SimulatedFleet`.
"""

from trellis.workflows.performance.simulator._app import SimInstance, create_app
from trellis.workflows.performance.simulator._engine import EngineParams, Regression, SimEngine, Workload
from trellis.workflows.performance.simulator._flavours import FLAVOURS, Flavour, KnobSpec
from trellis.workflows.performance.simulator._fleet import SimulatedFleet

__all__ = [
    "FLAVOURS",
    "EngineParams",
    "Flavour",
    "KnobSpec",
    "Regression",
    "SimEngine",
    "SimInstance",
    "SimulatedFleet",
    "Workload",
    "create_app",
]
