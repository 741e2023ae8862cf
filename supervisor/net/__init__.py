"""Container networking: stack networks as bridges (bridge.py), addresses (ipam.py).

`supervise/` and `app.py` use a stack's networking through the `Network` Protocol; `BridgeNetworks`
is the real one (netlink through pyroute2, as root). specs/networking.md describes the behaviour.
"""

from __future__ import annotations

from typing import Any, Protocol


class Network(Protocol):
    def cleanup_leftovers(self) -> list[str]:
        """Remove what a crashed run of the stack left; one line per thing removed."""
        ...

    def plan(self) -> None:
        """Subnets and gateways; raises a PysupError naming the network key on bad input."""
        ...

    def setup(self) -> None:
        """Create the stack's networks (bridges)."""
        ...

    def attach(self, container_id: str, service: Any, index: int) -> Any:
        """The replica's endpoint (`.netns`: the namespace path its container joins); idempotent."""
        ...

    def detach(self, container_id: str) -> None:
        """Remove what `attach` made for the replica."""
        ...

    def hosts_entries(self, container_id: str) -> list[tuple[str, str]]:
        """(name, address) pairs for the replica's /etc/hosts."""
        ...

    def close(self) -> None:
        """Remove everything (every endpoint, the networks)."""
        ...
