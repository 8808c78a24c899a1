"""The pure engine: every step type, criteria ops, waits and goal waits, with plain values."""

import datetime
import random
from decimal import Decimal

import pytest

from journeys import engine
from journeys.definition import parse_definition

NOW = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
STARTED = NOW - datetime.timedelta(hours=1)


def definition(steps, goals=(), conversions=(), **extra):
    data = {"key": "j", "name": "J", "steps": list(steps), "goals": list(goals)}
    data["conversions"] = list(conversions) or [{"key": "paid", "name": "Paid"}]
    data.update(extra)
    return parse_definition(data)[0]


def run(defn, *, current=None, path=(), contact=None, events=(), now=NOW, seed=1, **state):
    return engine.advance(
        state=engine.State(
            current_step=current if current is not None else defn.first_step.key,
            path=list(path),
            started_at=state.pop("started_at", STARTED),
            **state,
        ),
        definition=defn,
        contact=contact or {"external_id": "c1", "email": "c1@example.com", "attributes": {}},
        events=list(events),
        rng=random.Random(seed),
        now=now,
    )


def event(name, properties=None, at=NOW - datetime.timedelta(minutes=5)):
    return engine.ContactEvent(name=name, properties=properties or {}, timestamp=at)


def test_instant_steps_run_until_the_end_and_complete():
    defn = definition(
        [
            {
                "key": "hello",
                "type": "send_email",
                "subject": "Hi {{ contact.attributes.name }}",
                "body": "B",
                "next": "text",
            },
            {"key": "text", "type": "send_sms", "text": "Yo", "next": "tag"},
            {"key": "tag", "type": "update_contact", "attributes": {"stage": "x"}, "next": "buy"},
            {"key": "buy", "type": "convert", "conversion": "paid", "next": None},
        ]
    )
    outcome = run(defn, contact={"email": "a@b.c", "attributes": {"phone": "+100"}})
    assert outcome.state == engine.COMPLETED
    assert outcome.path == ["hello", "text", "tag", "buy"]
    assert [(v.seq, v.step_key, v.outcome) for v in outcome.visits] == [
        (0, "hello", "queued"),
        (1, "text", "queued"),
        (2, "tag", "updated"),
        (3, "buy", "converted"),
    ]
    assert [(m.channel, m.recipient, m.subject) for m in outcome.messages] == [
        ("email", "a@b.c", "Hi {{ contact.attributes.name }}"),
        ("sms", "+100", ""),
    ]
    assert outcome.attribute_updates == {"stage": "x"}
    assert [(a.conversion, a.source, a.step_key, a.seq) for a in outcome.awards] == [
        ("paid", "convert_step", "buy", 3)
    ]
    assert outcome.due_at is None and outcome.current_step == ""


def test_wait_step_pauses_until_its_duration_and_resumes_at_the_next_step():
    defn = definition(
        [
            {"key": "w", "type": "wait", "duration": "P2D", "next": "bye"},
            {"key": "bye", "type": "exit"},
        ]
    )
    first = run(defn)
    assert first.state == engine.ACTIVE
    assert first.current_step == "bye"
    assert first.due_at == NOW + datetime.timedelta(days=2)
    assert first.path == ["w"]

    second = run(defn, current="bye", path=first.path, now=first.due_at)
    assert second.state == engine.EXITED
    assert second.exit_reason == "Exit step 'bye'"
    assert second.path == ["w", "bye"]
    assert [(v.seq, v.outcome) for v in second.visits] == [(1, "exited")]


def test_wait_at_the_end_completes_when_due():
    defn = definition([{"key": "w", "type": "wait", "duration": "PT1H", "next": None}])
    first = run(defn)
    assert first.current_step == "" and first.state == engine.ACTIVE
    done = run(defn, current="", path=first.path, now=first.due_at)
    assert done.state == engine.COMPLETED and done.visits == []


def test_condition_takes_then_or_else_from_contact_attributes():
    defn = definition(
        [
            {
                "key": "c",
                "type": "condition",
                "if": {"attribute": "plan", "op": "eq", "value": "pro"},
                "then": "yes",
                "else": "no",
            },
            {"key": "yes", "type": "update_contact", "attributes": {"r": "yes"}, "next": None},
            {"key": "no", "type": "update_contact", "attributes": {"r": "no"}, "next": None},
        ]
    )
    pro = run(defn, contact={"attributes": {"plan": "pro"}})
    assert pro.path == ["c", "yes"] and pro.visits[0].outcome == "then"
    free = run(defn, contact={"attributes": {"plan": "free"}})
    assert free.path == ["c", "no"] and free.visits[0].outcome == "else"


def test_condition_sees_attributes_updated_earlier_in_the_same_run():
    defn = definition(
        [
            {"key": "set", "type": "update_contact", "attributes": {"plan": "pro"}, "next": "c"},
            {
                "key": "c",
                "type": "condition",
                "if": {"attribute": "plan", "op": "eq", "value": "pro"},
                "then": None,
                "else": "bye",
            },
            {"key": "bye", "type": "exit"},
        ]
    )
    assert run(defn).state == engine.COMPLETED


def test_a_run_leaves_the_contact_it_was_given_as_it_was():
    """A batch hands every run of a contact the same dict: an update in one run must not
    show in another's criteria (each run's updates are merged when the batch writes)."""
    defn = definition(
        [{"key": "set", "type": "update_contact", "attributes": {"plan": "pro"}, "next": None}]
    )
    contact = {"external_id": "c1", "email": "", "attributes": {"plan": "free"}}
    assert run(defn, contact=contact).attribute_updates == {"plan": "pro"}
    assert contact == {"external_id": "c1", "email": "", "attributes": {"plan": "free"}}


def test_split_follows_weights_at_random():
    defn = definition(
        [
            {
                "key": "ab",
                "type": "split",
                "paths": [{"weight": 80, "next": "a"}, {"weight": 20, "next": "b"}],
            },
            {"key": "a", "type": "update_contact", "attributes": {"p": "a"}, "next": None},
            {"key": "b", "type": "update_contact", "attributes": {"p": "b"}, "next": None},
        ]
    )
    outcomes = [run(defn, seed=seed).path[1] for seed in range(2000)]
    share = outcomes.count("a") / len(outcomes)
    assert 0.76 < share < 0.84
    assert {run(defn, seed=seed).visits[0].outcome for seed in range(50)} == {"path-0", "path-1"}


def test_exit_step_ends_as_exited():
    defn = definition([{"key": "x", "type": "exit"}])
    outcome = run(defn)
    assert outcome.state == engine.EXITED and outcome.path == ["x"]


GOAL_STEPS = [
    {
        "key": "check",
        "type": "evaluate_goal",
        "goal": "activated",
        "wait": "P7D",
        "achieved": "yay",
        "not_achieved": "nay",
    },
    {"key": "yay", "type": "update_contact", "attributes": {"r": "yes"}, "next": None},
    {"key": "nay", "type": "update_contact", "attributes": {"r": "no"}, "next": None},
]
GOALS = [
    {
        "key": "activated",
        "name": "Activated",
        "criteria": {"event": "project_created"},
        "conversion": "activation",
    }
]
CONVERSIONS = [{"key": "activation", "name": "Activation"}]


def test_evaluate_goal_achieved_now_records_the_goal_and_awards_its_conversion():
    defn = definition(GOAL_STEPS, GOALS, CONVERSIONS)
    outcome = run(defn, events=[event("project_created")])
    assert outcome.path == ["check", "yay"]
    assert outcome.visits[0].outcome == "achieved"
    assert [(a.goal, a.step_key) for a in outcome.achievements] == [("activated", "check")]
    assert [(a.conversion, a.source) for a in outcome.awards] == [("activation", "goal")]


def test_evaluate_goal_ignores_events_from_before_the_enrollment_started():
    defn = definition(GOAL_STEPS, GOALS, CONVERSIONS)
    outcome = run(
        defn, events=[event("project_created", at=STARTED - datetime.timedelta(seconds=1))]
    )
    assert outcome.waiting_for_goal == "activated"


def test_evaluate_goal_waits_then_wakes_on_a_matching_event():
    defn = definition(GOAL_STEPS, GOALS, CONVERSIONS)
    waiting = run(defn)
    assert waiting.state == engine.ACTIVE
    assert waiting.current_step == "check"
    assert waiting.waiting_for_goal == "activated"
    assert waiting.wait_until == waiting.due_at == NOW + datetime.timedelta(days=7)
    assert [(v.step_key, v.outcome, v.new) for v in waiting.visits] == [("check", "waiting", True)]

    later = NOW + datetime.timedelta(days=1)
    woken = run(
        defn,
        path=waiting.path,
        waiting_for_goal="activated",
        wait_until=waiting.wait_until,
        events=[event("project_created", at=later)],
        now=later,
    )
    assert woken.path == ["check", "yay"]
    assert [(v.seq, v.step_key, v.outcome, v.new) for v in woken.visits] == [
        (0, "check", "achieved", False),
        (1, "yay", "updated", True),
    ]
    assert woken.waiting_for_goal == "" and woken.state == engine.COMPLETED


def test_evaluate_goal_woken_by_another_event_goes_back_to_waiting():
    defn = definition(GOAL_STEPS, GOALS, CONVERSIONS)
    until = NOW + datetime.timedelta(days=7)
    outcome = run(
        defn,
        path=["check"],
        waiting_for_goal="activated",
        wait_until=until,
        events=[event("other")],
    )
    assert outcome.state == engine.ACTIVE
    assert outcome.due_at == until and outcome.waiting_for_goal == "activated"
    assert outcome.visits == [] and outcome.path == ["check"]


def test_evaluate_goal_times_out_to_not_achieved():
    defn = definition(GOAL_STEPS, GOALS, CONVERSIONS)
    until = NOW + datetime.timedelta(days=7)
    outcome = run(defn, path=["check"], waiting_for_goal="activated", wait_until=until, now=until)
    assert outcome.path == ["check", "nay"]
    assert outcome.visits[0].outcome == "not_achieved" and not outcome.visits[0].new
    assert outcome.achievements == [] and outcome.awards == []


def test_evaluate_goal_without_wait_goes_straight_to_not_achieved():
    steps = [dict(GOAL_STEPS[0]), *GOAL_STEPS[1:]]
    del steps[0]["wait"]
    outcome = run(definition(steps, GOALS, CONVERSIONS))
    assert outcome.path == ["check", "nay"]


def test_held_out_enrollment_takes_no_step():
    defn = definition(GOAL_STEPS, GOALS, CONVERSIONS)
    outcome = run(defn, held_out=True)
    assert outcome.state == engine.COMPLETED and outcome.visits == [] and outcome.path == []


def test_holdout_horizon_adds_up_every_wait():
    defn = definition(
        [
            {"key": "w", "type": "wait", "duration": "P2D", "next": "check"},
            *GOAL_STEPS,
        ],
        GOALS,
        CONVERSIONS,
    )
    assert engine.holdout_horizon(defn) == datetime.timedelta(days=9)


def test_unknown_current_step_is_an_engine_error():
    defn = definition([{"key": "x", "type": "exit"}])
    with pytest.raises(engine.EngineError, match="no step 'gone'"):
        run(defn, current="gone")


def test_a_long_chain_pauses_after_max_steps_and_goes_on_next_run():
    steps = [
        {"key": f"s{i}", "type": "update_contact", "attributes": {"i": i}, "next": f"s{i + 1}"}
        for i in range(engine.MAX_STEPS_PER_RUN + 5)
    ]
    steps[-1]["next"] = None
    defn = definition(steps)
    outcome = run(defn)
    assert outcome.state == engine.ACTIVE
    assert outcome.steps_run == engine.MAX_STEPS_PER_RUN
    assert outcome.current_step == f"s{engine.MAX_STEPS_PER_RUN}" and outcome.due_at == NOW


@pytest.mark.parametrize(
    ("actual", "op", "value", "expected"),
    [
        ("pro", "eq", "pro", True),
        ("pro", "eq", "free", False),
        (3, "eq", 3.0, True),
        (True, "eq", 1, False),
        ("pro", "ne", "free", True),
        (engine._MISSING, "ne", "x", True),
        (engine._MISSING, "eq", "x", False),
        (5, "gt", 3, True),
        (3, "gt", 3, False),
        (3, "gte", 3, True),
        ("10", "gt", 9, True),
        ("2026-01-02", "gt", "2026-01-01", True),
        (2, "lt", 3, True),
        (3, "lte", 3, True),
        ("abc", "lt", 3, False),
        (None, "gt", 3, False),
        ("hello world", "contains", "world", True),
        (["a", "b"], "contains", "b", True),
        (["a"], "contains", "z", False),
        ("b", "in", ["a", "b"], True),
        ("c", "in", ["a", "b"], False),
        ("x", "exists", None, True),
        (engine._MISSING, "exists", None, False),
        (None, "exists", None, False),
    ],
)
def test_compare_ops(actual, op, value, expected):
    assert engine.compare(actual, op, value, has_expected=op != "exists") is expected


HUGE = 10**400


@pytest.mark.parametrize(
    ("actual", "op", "value", "expected"),
    [
        (HUGE, "gt", 100, True),
        (-HUGE, "gt", 100, False),
        (HUGE, "lt", 1.5, False),
        (100, "lte", HUGE, True),
        (HUGE, "eq", HUGE, True),
        (HUGE, "eq", 1.0, False),
        (HUGE, "ne", 3, True),
        (HUGE, "in", [1, 2.5], False),
        ([HUGE], "contains", 1.0, False),
        (str(HUGE), "gt", 100, True),
        ("1e999", "gt", HUGE, True),
        (2**53 + 1, "eq", 2**53, False),
    ],
)
def test_numbers_beyond_a_double_compare_without_raising(actual, op, value, expected):
    # A 400-digit integer (a row written around the API's limits) raised OverflowError in
    # float() and stopped every event batch (issue 12).
    assert engine.compare(actual, op, value) is expected


def test_a_window_reaching_back_before_year_one_starts_at_the_calendars_start():
    year_one = datetime.datetime(1, 1, 1, 12, tzinfo=datetime.UTC)
    assert engine.time_before(
        year_one, datetime.timedelta(days=30)
    ) == datetime.datetime.min.replace(tzinfo=datetime.UTC)
    assert engine.time_before(NOW, datetime.timedelta(days=1)) == NOW - datetime.timedelta(days=1)


def test_exists_false_matches_an_absent_attribute():
    assert engine.compare(engine._MISSING, "exists", False) is True
    assert engine.compare("x", "exists", False) is False


def _criterion(data):
    defn = definition([{"key": "c", "type": "condition", "if": data, "then": None, "else": None}])
    return defn.steps[0].if_


def test_all_any_and_event_criteria_with_where_and_within():
    criterion = _criterion(
        {
            "all": [
                {"attribute": "plan", "op": "in", "value": ["pro", "team"]},
                {
                    "any": [
                        {
                            "event": "purchase",
                            "where": [{"property": "amount", "op": "gte", "value": 100}],
                        },
                        {"event": "demo_booked", "within": "P1D"},
                    ]
                },
            ]
        }
    )

    def check(attributes, events):
        return engine.criteria_match(
            criterion, contact={"attributes": attributes}, events=events, since=STARTED, now=NOW
        )

    assert check({"plan": "pro"}, [event("purchase", {"amount": 150})])
    assert not check({"plan": "pro"}, [event("purchase", {"amount": 50})])
    assert not check({"plan": "free"}, [event("purchase", {"amount": 150})])
    # within looks back from now, even before the enrollment started
    assert check({"plan": "team"}, [event("demo_booked", at=NOW - datetime.timedelta(hours=20))])
    assert not check(
        {"plan": "team"}, [event("demo_booked", at=NOW - datetime.timedelta(hours=25))]
    )
    # events in the future of `now` do not count
    assert not check(
        {"plan": "pro"},
        [event("purchase", {"amount": 150}, at=NOW + datetime.timedelta(seconds=1))],
    )
    assert engine.criteria_event_names(criterion) == {"purchase", "demo_booked"}
    assert engine.criteria_lookback(criterion) == datetime.timedelta(days=1)


def test_rules_match_events_conversions_and_goals_of_the_right_journey():
    defn = definition(
        [{"key": "x", "type": "exit"}],
        triggers=[
            {
                "type": "event",
                "event": "signup",
                "where": [{"property": "plan", "op": "eq", "value": "pro"}],
            },
            {"type": "conversion", "journey": "other", "conversion": "paid"},
            {"type": "goal", "journey": "other", "goal": "activated"},
        ],
        exit_when=[{"type": "conversion", "conversion": "paid"}],
    )
    event_trigger, conversion_trigger, goal_trigger = defn.triggers

    def matches(rule, name, properties):
        return engine.rule_matches_event(rule, journey_key="j", name=name, properties=properties)

    assert matches(event_trigger, "signup", {"plan": "pro"})
    assert not matches(event_trigger, "signup", {"plan": "free"})
    assert matches(conversion_trigger, "conversion", {"journey": "other", "key": "paid"})
    assert not matches(conversion_trigger, "conversion", {"journey": "j", "key": "paid"})
    assert matches(goal_trigger, "goal_achieved", {"journey": "other", "key": "activated"})
    assert not matches(goal_trigger, "conversion", {"journey": "other", "key": "activated"})
    # exit_when's journey defaults to this one
    assert matches(defn.exit_when[0], "conversion", {"journey": "j", "key": "paid"})
    assert not matches(defn.exit_when[0], "conversion", {"journey": "other", "key": "paid"})


# --- Event conversions: whether an event earns a conversion, and its value -------------------

ENTERED = NOW - datetime.timedelta(days=3)
DAY = datetime.timedelta(days=1)


def earns(*, event_time=NOW, active=True, window=None, published_at=None, archived_at=None):
    return engine.event_earns_conversion(
        event_time=event_time,
        entered_at=ENTERED,
        active=active,
        window=window,
        published_at=published_at,
        archived_at=archived_at,
    )


def test_an_event_earns_the_conversion_while_the_enrollment_is_active():
    assert earns(active=True)
    assert earns(active=True, event_time=ENTERED)


def test_an_event_from_before_the_contact_entered_never_earns_it():
    assert not earns(event_time=ENTERED - datetime.timedelta(seconds=1))
    assert not earns(event_time=ENTERED - DAY, window=30 * DAY)


def test_after_the_enrollment_ended_only_the_window_after_entry_counts():
    assert not earns(active=False)
    assert earns(active=False, window=3 * DAY, event_time=ENTERED + 3 * DAY)
    assert not earns(active=False, window=3 * DAY, event_time=ENTERED + 3 * DAY + DAY / 24)


def test_an_archived_conversion_counts_only_for_versions_published_while_it_was_active():
    archived = NOW - DAY
    assert earns(published_at=archived - DAY, archived_at=archived)
    assert earns(published_at=archived, archived_at=archived)
    assert not earns(published_at=archived + DAY, archived_at=archived)
    assert not earns(published_at=None, archived_at=archived)
    assert earns(published_at=None, archived_at=None)


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"amount": 49.999}, "50.00"),
        ({"amount": "12.5"}, "12.50"),
        ({"amount": 0}, "0.00"),
        ({"amount": -3}, "9.00"),
        ({"amount": 1e12}, "9.00"),
        ({"amount": True}, "9.00"),
        ({"amount": "lots"}, "9.00"),
        ({"amount": "NaN"}, "9.00"),
        ({}, "9.00"),
    ],
)
def test_the_value_comes_from_the_event_when_it_holds_a_sane_amount(properties, expected):
    value = engine.event_conversion_value(
        value_property="amount", default=Decimal("9.00"), properties=properties
    )
    assert value == Decimal(expected)


def test_without_a_value_property_the_conversion_keeps_its_own_value():
    value = engine.event_conversion_value(
        value_property="", default=Decimal("9.00"), properties={"amount": 5}
    )
    assert value == Decimal("9.00")


def test_event_filters_read_a_stored_where_as_the_triggers_do():
    filters = engine.event_filters([{"property": "plan", "op": "eq", "value": "pro"}])
    assert engine.filters_match(filters, {"plan": "pro"})
    assert not engine.filters_match(filters, {"plan": "free"})
    assert engine.event_filters([]) == []
