"""Agent request bodies: hostile and sloppy input gets a precise refusal."""

from __future__ import annotations

import json

import pytest

from netdeploy.inventory import NodeState as S
from netdeploy.rollout.errors import BadReport
from netdeploy.rollout.reports import MAX_MESSAGE, parse_health, parse_report


def test_a_progress_report_parses() -> None:
    report = parse_report({"state": "imaging", "progress": 42.5, "message": "writing"})
    assert (report.state, report.progress, report.message) == (S.IMAGING, 42.5, "writing")
    assert parse_report({"state": "imaged"}).progress is None
    assert parse_report({"state": "imaging", "progress": 100}).progress == 100.0


@pytest.mark.parametrize(
    "body,match",
    [
        ([], "JSON object"),
        ("imaging", "JSON object"),
        (None, "JSON object"),
        ({}, "state must be one of"),
        ({"state": "released"}, "decided by the server"),
        ({"state": "held"}, "decided by the server"),
        ({"state": 3}, "state must be one of"),
        ({"state": "imaging", "progress": -0.1}, "from 0 to 100"),
        ({"state": "imaging", "progress": 100.01}, "from 0 to 100"),
        ({"state": "imaging", "progress": json.loads("NaN")}, "from 0 to 100"),
        ({"state": "imaging", "progress": json.loads("Infinity")}, "from 0 to 100"),
        ({"state": "imaging", "progress": "50"}, "must be a number"),
        ({"state": "imaging", "progress": True}, "must be a number"),
        ({"state": "imaged", "progress": 50}, "belongs to state imaging"),
        ({"state": "imaging", "colour": "red"}, "unknown field 'colour'"),
        ({"state": "imaging", "message": 5}, "message must be a string"),
        ({"state": "imaging", "message": "x" * (MAX_MESSAGE + 1)}, "at most"),
    ],
)
def test_bad_events_are_refused_with_the_fix(body: object, match: str) -> None:
    with pytest.raises(BadReport, match=match):
        parse_report(body)


def test_health_reports() -> None:
    assert parse_health({"healthy": True}).healthy is True
    assert parse_health({"healthy": False, "message": "disk Q offline"}).message
    for body, match in [
        ({}, "healthy must be true or false"),
        ({"healthy": "yes"}, "healthy must be true or false"),
        ({"healthy": 1}, "healthy must be true or false"),
        ({"healthy": True, "state": "joined"}, "unknown field"),
        ([True], "JSON object"),
    ]:
        with pytest.raises(BadReport, match=match):
            parse_health(body)
