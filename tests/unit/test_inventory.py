import pytest

from netdeploy.inventory import BadMac, mac_hyphens, normalize_mac


@pytest.mark.parametrize(
    "text",
    [
        "52:54:00:ab:cd:ef",
        "52-54-00-AB-CD-EF",
        "525400abcdef",
        "525400ABCDEF",
        "5254.00ab.cdef",
        " 52:54:00:Ab:cD:eF ",
        "01-52-54-00-ab-cd-ef",
    ],
)
def test_every_notation_reaches_one_canonical_form(text):
    assert normalize_mac(text) == "52:54:00:ab:cd:ef"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "52:54:00:ab:cd",
        "52:54:00:ab:cd:ef:01",
        "52:54:00-ab:cd:ef",
        "52:54:00:ab:cd:eg",
        "5254.00ab.cdef.0000",
        "525400abcde",
        "52::54:00:ab:cd:ef",
        "not a mac",
        "52:54:0:ab:cd:ef0",
    ],
)
def test_malformed_macs_are_refused_with_the_expected_form(text):
    with pytest.raises(BadMac, match="aa:bb:cc:dd:ee:ff"):
        normalize_mac(text)


def test_hyphen_form_for_pxelinux():
    assert mac_hyphens("52:54:00:AB:CD:EF") == "52-54-00-ab-cd-ef"
