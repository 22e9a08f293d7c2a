"""The shipping route: everything the tasks need, from the topology's ``shipping`` section.

Every path is built through ``check_backup_name``: a name from XCom (which users can edit through the
REST API) never leads outside the source root or the destination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.gir_ops.backup.links import check_destination_root
from include.gir_ops.backup.spec import PARTIAL_SUFFIX, RETIRED_SUFFIX
from include.gir_ops.backup.tree import check_backup_name, storage_path
from include.gir_ops.topology import DEFAULT_BACKUP_NAME_PATTERN

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from include.gir_ops.topology import Topology


@dataclass(frozen=True)
class ShippingRoute:
    """Everything the shipping tasks need, taken from the topology's ``shipping`` section."""

    from_site: str
    to_site: str
    source_root: str
    destination: str
    keep: int
    ready_marker: str | None
    quiet_minutes: float
    max_age_hours: float
    wait_timeout_minutes: float
    poll_seconds: float
    backup_name_pattern: str = DEFAULT_BACKUP_NAME_PATTERN
    destination_may_be_link: bool = False
    bandwidth_limit_mbps: float | None = None  # the copy's WAN cap; None: as fast as the disks go
    mode: str = "copy"
    manifest_root: str = ""

    @classmethod
    def from_topology(cls, topology: Topology) -> ShippingRoute:
        shipping = topology.shipping
        if shipping is None:
            raise ValueError("the topology has no shipping section")
        source_root = topology.site(shipping.from_site).speechminer.index_backup
        if shipping.mode == "verify-in-place":
            source_root = shipping.destination  # SpeechMiner writes there itself
        if source_root is None:  # the topology validator already refuses this
            raise ValueError(f"site {shipping.from_site} has no speechminer.index_backup")
        return cls(
            from_site=shipping.from_site,
            to_site=shipping.to_site,
            source_root=source_root,
            destination=shipping.destination,
            keep=shipping.keep,
            ready_marker=shipping.ready_marker,
            quiet_minutes=shipping.quiet_minutes,
            max_age_hours=shipping.max_age_hours,
            wait_timeout_minutes=shipping.wait_timeout_minutes,
            poll_seconds=shipping.poll_seconds,
            backup_name_pattern=shipping.backup_name_pattern,
            destination_may_be_link=shipping.destination_may_be_link,
            bandwidth_limit_mbps=shipping.bandwidth_limit_mbps,
            mode=shipping.mode,
            manifest_root=shipping.manifest_root,
        )

    def source_folder(self, backup_name: str) -> ObjectStoragePath:
        return storage_path(self.source_root) / check_backup_name(backup_name, self.backup_name_pattern)

    def destination_root(self) -> ObjectStoragePath:
        """The destination folder, refused when it is a link and ``destination_may_be_link`` is off."""
        root = storage_path(self.destination)
        check_destination_root(root, may_be_link=self.destination_may_be_link)
        return root

    def final(self, backup_name: str) -> ObjectStoragePath:
        return self.destination_root() / check_backup_name(backup_name, self.backup_name_pattern)

    def staging(self, backup_name: str) -> ObjectStoragePath:
        name = check_backup_name(backup_name, self.backup_name_pattern)
        return self.destination_root() / f"{name}{PARTIAL_SUFFIX}"

    def retired(self, backup_name: str) -> ObjectStoragePath:
        name = check_backup_name(backup_name, self.backup_name_pattern)
        return self.destination_root() / f"{name}{RETIRED_SUFFIX}"
