"""A local Binance exchange simulator with fault injection, for tests, demos and benchmarks.

::

    from orderflow_plugin.sim import Simulator, Scenario, Fault, Pace

    async with Simulator(scenario=Scenario([[Fault("reset_after", after=500)]])) as sim:
        ...  # connect to f"{sim.ws_url}/stream?streams=btcusdt@aggTrade", REST at sim.rest_url

``SimCertificates(directory)`` makes a throwaway CA for ``Simulator(ssl_context=...)`` (wss://, https://).
"""

from .archive import ARCHIVE_FAULTS, Archive, ArchiveFault, tiled_tape
from .certs import SimCertificates
from .feed import Pace, SymbolFeed
from .proxy import FaultProxy, LinkRecord, ProxyRecord
from .records import ConnectionRecord, SimRecord
from .scenario import CONNECTION_FAULTS, REST_FAULTS, Fault, Scenario
from .server import Simulator

__all__ = [
    "ARCHIVE_FAULTS",
    "CONNECTION_FAULTS",
    "REST_FAULTS",
    "Archive",
    "ArchiveFault",
    "ConnectionRecord",
    "Fault",
    "FaultProxy",
    "LinkRecord",
    "Pace",
    "ProxyRecord",
    "Scenario",
    "SimCertificates",
    "SimRecord",
    "Simulator",
    "SymbolFeed",
    "tiled_tape",
]
