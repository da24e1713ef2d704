"""The event log's one-line texts for multicast events (what the dashboard and JSON log show)."""

from __future__ import annotations

from netdeploy.eventlog import describe, macs_of, wave


def event(what: str, **detail: object) -> dict:
    return {
        "kind": "multicast",
        "detail": {"what": what, "session": "0badcafe", "image": "w2k3", **detail},
    }


def test_receiver_events_say_what_happened_to_the_copy():
    assert describe(event("receiver_done", receiver="sql-n1", mac="m")) == (
        "received w2k3 from multicast session 0badcafe, sha256 verified"
    )
    assert describe(event("receiver_dropped", receiver="sql-n3", why="lost 22% of the slices")) == (
        "dropped from multicast session 0badcafe: lost 22% of the slices; finishing by HTTP"
    )
    assert "failed its sha256" in describe(event("receiver_bad"))


def test_session_events_count_receivers_and_bytes():
    started = event("session_started", reason="all 3 expected receivers joined", receivers=3,
                    receivers_joined=3, bytes_sent=0, repair_slices=0)  # fmt: skip
    assert describe(started) == (
        "multicast session 0badcafe of w2k3 started: all 3 expected receivers joined; "
        "3 receivers (3 joined)"
    )
    finished = event("session_finished", receivers=3, receivers_done=2, receivers_dropped=1,
                     bytes_sent=34 * 2**20, repair_slices=12)  # fmt: skip
    assert describe(finished) == (
        "multicast session 0badcafe of w2k3 finished; 3 receivers (2 done, 1 dropped); "
        "sent 34.0 MiB, 12 slices repaired"
    )
    failed = event(
        "session_failed", receivers=0, bytes_sent=0, repair_slices=0, detail="no receivers"
    )
    assert describe(failed).endswith("; no receivers")


def test_transfers_and_severity_read_as_an_admin_reads_them():
    from netdeploy.eventlog import severity

    image = {
        "kind": "http",
        "detail": {
            "what": "image",
            "image": "w2k3",
            "offset": 0,
            "length": 64 << 20,
            "sent": 64 << 20,
            "complete": True,
            "seconds": 3.4,
        },
    }
    assert describe(image) == "image w2k3: 64.0 MiB in 3.4 s, complete"
    assert severity(image) == "info"
    cut = {**image, "detail": {**image["detail"], "sent": 1 << 20, "complete": False}}
    assert describe(cut) == "image w2k3: 64.0 MiB in 3.4 s, incomplete: 1.0 MiB of the range"
    assert severity(cut) == "warning"
    tftp = {
        "kind": "tftp",
        "detail": {
            "file": "media/undionly.kpxe",
            "client": "10.0.0.9",
            "outcome": "timeout",
            "bytes": 1468,
            "seconds": 6.0,
            "retransmits": 5,
            "blksize": 1468,
            "windowsize": 1,
        },
    }
    assert describe(tftp) == (
        "media/undionly.kpxe to 10.0.0.9: timeout, 1,468 bytes in 6.0 s "
        "(blksize 1468, windowsize 1, 5 retransmitted)"
    )
    assert severity(tftp) == "warning"
    assert severity({"kind": "state", "to": "failed"}) == "error"
    assert severity({"kind": "gate", "to": "stopped"}) == "error"
    assert severity({"kind": "auth", "detail": {}}) == "error"
    assert severity({"kind": "state", "to": "held"}) == "info"


def test_a_proxydhcp_answer_reads_as_its_message_and_reason():
    ev = {
        "kind": "dhcp",
        "detail": {
            "message": "DHCPDISCOVER on port 67 from uefi (x64 UEFI): offer media/snponly.efi",
            "why": "UEFI PXE firmware, not iPXE: chainload iPXE",
            "arch": 7,
            "guid": "00" * 17,
        },
    }
    assert describe(ev) == (
        "DHCPDISCOVER on port 67 from uefi (x64 UEFI): offer media/snponly.efi; "
        "UEFI PXE firmware, not iPXE: chainload iPXE"
    )


def test_a_release_wave_names_its_nodes_and_reads_as_one_line() -> None:
    nodes = [(f"52:54:00:00:00:{i:02x}", f"n{i}") for i in range(2, 14)]
    row = wave("clu", nodes, seq=2, reason="released by policy waves:12", actor="gate")
    assert row.mac is None and (row.from_state, row.to_state) == ("held", "released")
    assert macs_of(row) == [mac for mac, _ in nodes]
    ev = {"kind": "state", "from": "held", "to": "released", "mac": None, "detail": row.detail}
    assert macs_of(ev) == macs_of(row)
    assert describe(ev) == (
        "held → released: released by policy waves:12 "
        "(wave 2: n2, n3, n4, n5, n6, n7, n8, n9 and 4 more)"
    )
    assert macs_of({"kind": "state", "mac": "52:54:00:00:00:02", "detail": {}}) == [
        "52:54:00:00:00:02"
    ]
    assert macs_of({"kind": "gate", "mac": None, "detail": {"macs": "not a list"}}) == []
