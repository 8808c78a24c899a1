"""The editor's pure operations on a definition: drawing it, inserting and deleting steps,
durations in words, summaries of what a version changed."""

import pytest

from journeys.editing import (
    build_diagram,
    delete_step,
    humanize_duration,
    insert_step,
    parse_human_duration,
    summarize_changes,
    valid_port,
)

FLOW = {
    "steps": [
        {"key": "welcome", "type": "send_email", "subject": "Hi", "body": "B", "next": "ab"},
        {"key": "ab", "type": "split", "paths": [{"weight": 1, "next": "nudge"}, {"weight": 3, "next": "check"}]},
        {"key": "nudge", "type": "send_sms", "text": "Hey", "next": "check"},
        {"key": "check", "type": "condition", "if": {"attribute": "plan", "op": "eq", "value": "pro"}, "then": "bye", "else": None},
        {"key": "bye", "type": "exit"},
    ]
}  # fmt: skip


def test_diagram_draws_each_step_once_and_links_merges():
    diagram = build_diagram(FLOW)
    welcome, ab = diagram.main.cards
    assert (welcome.key, ab.key) == ("welcome", "ab")
    left, right = ab.branches
    assert (left.label, right.label) == ("25%", "75%")
    assert [c.key for c in left.sequence.cards] == ["nudge", "check"]
    then, else_ = left.sequence.cards[1].branches
    assert (then.label, then.sequence.end, else_.label, else_.sequence.end) == (
        "then", "exit", "else", "end",
    )  # fmt: skip
    assert (right.sequence.end, right.sequence.target) == ("goto", "check")
    assert diagram.detached == []


def test_diagram_shows_unreachable_steps_and_missing_targets_apart():
    definition = {
        "steps": [
            {"key": "a", "type": "wait", "duration": "P1D", "next": "ghost"},
            {"key": "lost", "type": "exit"},
        ]
    }
    diagram = build_diagram(definition)
    assert (diagram.main.end, diagram.main.target) == ("missing", "ghost")
    assert [s.cards[0].key for s in diagram.detached] == ["lost"]


def test_diagram_of_a_loop_ends_in_a_link_back():
    definition = {"steps": [{"key": "a", "type": "wait", "duration": "P1D", "next": "a"}]}
    assert build_diagram(definition).main.end == "goto"


def test_insert_after_a_step_continues_to_its_old_successor():
    result, key = insert_step(FLOW, after="welcome", port="next", kind="wait")
    assert key == "wait-1"
    assert result["steps"][0]["next"] == "wait-1"
    assert result["steps"][1] == {"key": "wait-1", "type": "wait", "duration": "P1D", "next": "ab"}
    assert FLOW["steps"][0]["next"] == "ab"  # the original is untouched


def test_insert_on_a_split_path_and_at_the_start():
    result, key = insert_step(FLOW, after="ab", port="paths.1", kind="condition")
    step = next(s for s in result["steps"] if s["key"] == key)
    assert result["steps"][1]["paths"][1]["next"] == key and step["then"] == "check"
    result, key = insert_step(FLOW, after=None, port="start", kind="send_sms")
    assert result["steps"][0] == {"key": key, "type": "send_sms", "text": "", "next": "welcome"}


def test_insert_into_an_empty_flow():
    result, key = insert_step({"steps": []}, after=None, port="start", kind="exit")
    assert result["steps"] == [{"key": "exit-1", "type": "exit"}]


def test_valid_port_refuses_ports_a_step_does_not_have():
    assert valid_port(FLOW, "check", "else")
    assert not valid_port(FLOW, "check", "next")
    assert not valid_port(FLOW, "ghost", "next")
    assert valid_port(FLOW, None, "start")


def test_delete_reconnects_every_predecessor_to_the_successor():
    result = delete_step(FLOW, key="check")
    keys = [s["key"] for s in result["steps"]]
    assert "check" not in keys
    assert result["steps"][1]["paths"][1]["next"] == "bye"
    assert result["steps"][2]["next"] == "bye"


def test_delete_of_a_last_step_ends_the_branch():
    result = delete_step(FLOW, key="bye")
    assert result["steps"][3]["then"] is None


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2 days", "P2D"),
        ("1 day 12 hours", "P1DT12H"),
        ("90 min", "PT1H30M"),
        ("1 week", "P7D"),
        ("P3D", "P3D"),
        ("pt30m", "PT30M"),
    ],
)
def test_durations_in_words(text, iso):
    assert parse_human_duration(text) == iso


@pytest.mark.parametrize("text", ["soon", "3 months", "0 days", "2"])
def test_bad_durations_are_refused_with_a_message(text):
    with pytest.raises(ValueError):
        parse_human_duration(text)


def test_humanize_duration():
    assert humanize_duration("P14D") == "2 weeks"
    assert humanize_duration("P1DT12H") == "1 day 12 hours"
    assert humanize_duration("PT30M") == "30 minutes"
    assert humanize_duration("nonsense") == "nonsense"


def test_summarize_changes():
    after, _ = insert_step(FLOW, after="welcome", port="next", kind="wait")
    assert summarize_changes(None, FLOW) == "First version"
    assert summarize_changes(FLOW, after) == "Added 1 step (wait-1); changed 1 step (welcome)"
    assert summarize_changes(FLOW, FLOW) == "No changes to the flow"
