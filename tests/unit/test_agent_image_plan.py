"""The image part of the agent's plan (netdeploy.boot.agent.image_plan) and its shell form.

A raw+zstd image is handed out with what the disk must hash to after decompressing, and only
to an agent that says it can decompress (``?zstd=1``); never by multicast."""

from __future__ import annotations

from netdeploy.boot.agent import ImageRef, distribution, image_plan
from netdeploy.config import MulticastConfig, load_config
from netdeploy.http.agent_plan import as_shell
from netdeploy.store.models import Image, Node
from tests.conftest import DEMO_CONFIG

URL = "http://10.0.0.1:8080"
MAC = "52:54:00:00:10:01"
RAW_SHA = "ab" * 32
FILE_SHA = "cd" * 32


def node() -> Node:
    return Node(mac=MAC, hostname="sql-n1", image="w2k3-ent-sp1", state="pxe")


def image(fmt: str = "raw+zstd", **facts: object) -> Image:
    return Image(
        name="w2k3-ent-sp1",
        path="/srv/w2k3.img",
        format=fmt,
        sha256=FILE_SHA,
        size=1234,
        status="ok",
        facts=facts,
    )


def test_a_zstd_image_carries_what_the_disk_must_hash_to() -> None:
    ref, why = image_plan(URL, node(), image(raw_size=64 << 20, raw_sha256=RAW_SHA), unzstd=True)
    assert ref is not None and why == ""
    assert ref.as_plan() == {
        "name": "w2k3-ent-sp1",
        "url": f"{URL}/images/w2k3-ent-sp1?mac={MAC}",
        "sha256": FILE_SHA,  # the served stream's own hash (HTTP headers, the stream check)
        "size": 1234,
        "format": "raw+zstd",
        "raw_size": 64 << 20,
        "raw_sha256": RAW_SHA,
    }


def test_a_zstd_image_is_refused_to_an_agent_that_cannot_decompress() -> None:
    ref, why = image_plan(URL, node(), image(raw_size=64 << 20, raw_sha256=RAW_SHA))
    assert ref is None
    assert "stored as raw+zstd" in why and "cannot decompress it" in why
    assert "nothing was written" in why
    assert "`netdeploy media build`" in why and "libzstd-dev" in why
    assert 'format = "raw" in [images.w2k3-ent-sp1]' in why and "without --compress" in why


def test_a_zstd_image_without_its_raw_facts_is_refused() -> None:
    broken = ({}, {"raw_size": 10}, {"raw_sha256": RAW_SHA}, {"raw_size": 0, "raw_sha256": RAW_SHA})
    for facts in broken:
        ref, why = image_plan(URL, node(), image(**facts), unzstd=True)
        assert ref is None and "no raw_size/raw_sha256" in why, facts
        assert "image add w2k3-ent-sp1 PATH --compress zstd" in why


def test_a_raw_image_is_unchanged_and_has_no_raw_fields() -> None:
    for unzstd in (False, True):
        ref, _ = image_plan(URL, node(), image("raw"), unzstd=unzstd)
        assert ref is not None
        plan = ref.as_plan()
        assert plan["format"] == "raw" and "raw_size" not in plan and "raw_sha256" not in plan


def test_multicast_is_never_offered_for_a_zstd_image() -> None:
    cfg = load_config(DEMO_CONFIG)
    multicast = {"distribution": "multicast"}
    clusters = {n: c.model_copy(update=multicast) for n, c in cfg.clusters.items()}
    cfg = cfg.model_copy(update={"multicast": MulticastConfig(enabled=True), "clusters": clusters})
    node_cfg = cfg.node_by_mac(MAC)
    assert node_cfg is not None
    raw = ImageRef("w2k3-ent-sp1", "u", FILE_SHA, 1)
    assert distribution(cfg, URL, node_cfg, raw, MAC)["mode"] == "multicast"
    packed = ImageRef("w2k3-ent-sp1", "u", FILE_SHA, 1, None, "raw+zstd", 2, RAW_SHA)
    answer = distribution(cfg, URL, node_cfg, packed, MAC)
    assert answer["mode"] == "unicast" and "is raw+zstd" in answer["why"], answer


def test_the_shell_plan_names_format_and_raw_target() -> None:
    ref, _ = image_plan(URL, node(), image(raw_size=5, raw_sha256=RAW_SHA), unzstd=True)
    assert ref is not None
    body = {
        "state": "pxe",
        "mode": "image",
        "why": "",
        "hostname": "sql-n1",
        "image": ref.as_plan(),
        "disk": "auto",
        "distribution": {"mode": "unicast"},
        "gate_timeout": 30,
        "inject": [],
    }
    text = as_shell(body)
    assert "ND_IMAGE_FORMAT=raw+zstd\n" in text
    assert "ND_IMAGE_RAW_SIZE=5\n" in text and f"ND_IMAGE_RAW_SHA256={RAW_SHA}\n" in text
    assert f"ND_IMAGE_SHA256={FILE_SHA}\n" in text and "ND_IMAGE_SIZE=1234\n" in text
    body["image"] = None
    text = as_shell(body)
    assert "ND_IMAGE_FORMAT=''\n" in text and "ND_IMAGE_RAW_SIZE=''\n" in text
