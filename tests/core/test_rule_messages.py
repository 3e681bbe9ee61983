"""What a rules file is told: errors naming the rule by index and id, the values an enumeration
takes, how to write a date; warnings of a percent written for a fraction; and which rules cannot
fire on the data at hand."""

from __future__ import annotations

import pytest

from monitor.core.rules.spec import RuleError, cannot_fire, parse_rules, rule_warnings

OK = '[[rules]]\nid = "ok"\nkind = "streak"\nsymbols = ["A"]\n'


def error(text: str) -> str:
    with pytest.raises(RuleError) as caught:
        parse_rules(text)
    return str(caught.value)


def test_a_rule_written_as_a_single_table_says_to_write_two_brackets() -> None:
    """`[rules]` (one bracket, as the daemon config's section) before a rule's keys: the error
    says each rule is a `[[rules]]` table (it said only "rules: Expected `array`, got
    `object`")."""
    text = '[rules]\nid = "s"\nkind = "streak"\nsymbols = ["A"]\n'
    assert error(text) == (
        "rules: Expected `array`, got `object`; each rule is a [[rules]] table, with two"
        " brackets ([rules], one, is a single table: the daemon config's section naming this"
        " file)"
    )


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            'id = "surge.5d"\nkind = "surge"\nsymbols = ["A"]\nmin_return = "ten"\n',
            'rules[1] (id "surge.5d").min_return: Expected `float`, got `str`',
        ),
        (
            'id = "s"\nkind = "streak"\nsymbols = ["A"]\nseverity = "urgent"\n',
            "rules[1] (id \"s\").severity: Invalid enum value 'urgent'; severity is one of info,"
            " notice, warning, critical",
        ),
        (
            'id = "s"\nkind = "streak"\nsymbols = ["A"]\ntimeframe = "1h"\n',
            "rules[1] (id \"s\").timeframe: Invalid enum value '1h'; timeframe is one of 1m, 1d,"
            " 1w",
        ),
        (
            'id = "q"\nkind = "squeeze"\nuniverse = true\nunknown_short_interest = "ignore"\n',
            "rules[1] (id \"q\").unknown_short_interest: Invalid enum value 'ignore';"
            " unknown_short_interest is one of skip, fire",
        ),
        (
            'id = "m"\nkind = "movers"\nuniverse = true\nsince = "2024-07-01"\n',
            'rules[1] (id "m").since: Expected `date | null`, got `str`; write the date'
            " unquoted, as a TOML date: since = 2024-07-01",
        ),
        (
            'id = "m"\nkind = "movers"\nuniverse = true\nsince = "July"\n',
            'rules[1] (id "m").since: Expected `date | null`, got `str`; write the date'
            " unquoted, as a TOML date: since = YYYY-MM-DD",
        ),
        (
            'kind = "streak"\nsymbols = ["A"]\n',
            "rules[1]: Object missing required field `id`",
        ),
        (
            'id = "r1"\nkind = "surge"\nuniverse = true\nsymbols = ["A"]\n',
            'rules[1] (id "r1").symbols: give symbols = [...] or universe = true, not both'
            " (universe = true watches every symbol but those in exclude)",
        ),
        (
            'id = "d"\nkind = "drawdown"\nsymbols = ["A"]\n',
            'rules[1] (id "d"): drawdown needs max_below_high and/or min_below_high',
        ),
    ],
)
def test_errors_name_the_rule_by_index_and_id(rule: str, message: str) -> None:
    """The second rule's error is led by `rules[1]` and, when the table has one, its id; an
    enumeration lists its values, and a quoted date says how to write a TOML date."""
    assert error(f"{OK}\n[[rules]]\n{rule}") == message


@pytest.mark.parametrize(
    ("parameters", "warnings"),
    [
        ('kind = "surge"\nsymbols = ["A"]\nmin_return = 0.10', []),
        (
            'kind = "surge"\nsymbols = ["A"]\nmin_return = 10',
            [
                'rules[1] (id "x").min_return: 10 is 1,000%; it is a fraction, 0.10 means 10%:'
                " did you mean 0.1?"
            ],
        ),
        (
            'kind = "squeeze"\nuniverse = true\nmin_short_interest = 30',
            [
                'rules[1] (id "x").min_short_interest: 30 is 3,000% of the float sold short; it'
                " is a fraction, 0.10 means 10% (the short-interest file is in percent, rules are"
                " not): did you mean 0.3?"
            ],
        ),
        ('kind = "squeeze"\nuniverse = true\nmin_short_interest = 1.4', []),  # (140%: it happens)
        (
            'kind = "rotation"\nmin_spread = 5\nmax_large_return = 0',
            [
                'rules[1] (id "x").min_spread: 5 is 500%; it is a fraction, 0.10 means 10%: did'
                " you mean 0.05?"
            ],
        ),
        ('kind = "fade"\nsymbols = ["A"]\nrise = 0.15', []),
    ],
)
def test_fractions_past_a_plausible_bound_are_warned_of(
    parameters: str, warnings: list[str]
) -> None:
    """A fraction parameter past a plausible bound (a return of over 100%, short interest of
    over 500% of the float) is accepted, and warned of as likely a percent."""
    rules = parse_rules(f'{OK}\n[[rules]]\nid = "x"\n{parameters}\n')
    assert rule_warnings(rules) == warnings


def test_a_file_without_rules_or_with_every_rule_off_is_warned_of() -> None:
    """No rules, or none enabled: there is nothing to run, and the warning says so."""
    assert rule_warnings(parse_rules("")) == ["no rules: the file has no [[rules]] table"]
    off = parse_rules(OK + "enabled = false\n")
    assert rule_warnings(off) == ["no rule is enabled (each has enabled = false)"]


def test_rules_that_cannot_fire_on_the_data_are_told_why() -> None:
    """Missing symbols, a universe emptied by `exclude`, a breadth universe below
    `min_symbols` and a minute rule without minute bars; the rules that can fire are left out."""
    rules = parse_rules(
        """
[[rules]]
id = "named"
kind = "streak"
symbols = ["A", "Z"]
[[rules]]
id = "gone"
kind = "streak"
symbols = ["Z"]
[[rules]]
id = "rotation"
kind = "rotation"
small = "A"
large = "Z"
[[rules]]
id = "excluded"
kind = "movers"
universe = true
exclude = ["A", "B", "Q"]
[[rules]]
id = "some"
kind = "movers"
universe = true
exclude = ["A"]
[[rules]]
id = "thin"
kind = "breadth"
universe = true
exclude = ["A"]
min_symbols = 2
[[rules]]
id = "minute"
kind = "surge"
symbols = ["A"]
timeframe = "1m"
"""
    )
    assert cannot_fire(rules.rules, {"A", "B"}, minute_bars=False) == {
        "gone": "Z not in the data",
        "rotation": "Z not in the data",
        "excluded": "its universe is empty: every symbol of the data (A, B) is in exclude",
        "thin": "its universe has 1 symbol in the data, fewer than min_symbols (2)",
        "minute": "it is a 1m rule and the data has daily bars only (no minute or tick file)",
    }
    assert "minute" not in cannot_fire(rules.rules, {"A", "B"}, minute_bars=True)


def test_a_symbol_the_data_spells_otherwise_is_named_as_the_data_writes_it() -> None:
    """A rule's symbols missing from the data that has them in other case or punctuation
    (`--data iwm=iwm.csv`, a long file of lower-case tickers, BRK.B for BRK-B): the reason says
    how the data writes them (it said only "IWM, QQQ not in the data")."""
    rules = parse_rules(
        '[[rules]]\nid = "r"\nkind = "rotation"\nsmall = "IWM"\nlarge = "QQQ"\n'
        '[[rules]]\nid = "s"\nkind = "surge"\nsymbols = ["BRK-B", "^RUT"]\n'
    )
    assert cannot_fire(rules.rules, {"iwm", "QQQ", "BRK.B"}) == {
        "r": "IWM not in the data (symbols are matched as written, and the data writes IWM as"
        " 'iwm')",
        "s": "BRK-B, ^RUT not in the data (symbols are matched as written, and the data writes"
        " BRK-B as 'BRK.B')",
    }


def test_an_unknown_parameter_with_no_near_name_lists_the_ones_the_kind_takes() -> None:
    from monitor.core.rules.spec import RuleError, parse_rules

    text = '[[rules]]\nid = "s"\nkind = "surge"\nsymbols = ["X"]\nbananas = 3\n'
    with pytest.raises(RuleError) as info:
        parse_rules(text)
    message = str(info.value)
    assert message.startswith('rules[0] (id "s"): Object contains unknown field `bananas`; it')
    assert "window" in message and "min_return" in message and "min_short_interest" not in message


# Each integer count of periods a kind takes (with what else the kind needs to validate).
PERIOD_COUNTS = [
    ('kind = "streak"\nsymbols = ["A"]', "count"),
    ('kind = "streak"\nsymbols = ["A"]', "cooldown"),
    ('kind = "surge"\nsymbols = ["A"]', "window"),
    ('kind = "squeeze"\nsymbols = ["A"]', "volume_window"),
    ('kind = "squeeze"\nsymbols = ["A"]\nshort_interest_lag = 0', "short_interest_max_age"),
    ('kind = "rotation"', "window"),
    ('kind = "drawdown"\nsymbols = ["A"]\nmin_below_high = 0.1', "lookback"),
    ('kind = "breadth"\nuniverse = true', "window"),
    ('kind = "movers"\nuniverse = true', "window"),
    ('kind = "fade"\nsymbols = ["A"]', "rise_window"),
    ('kind = "fade"\nsymbols = ["A"]', "within"),
]
TOO_MANY = (
    "Expected `int` <= 100000; a count of periods is at most 100,000 (some 400 years of"
    " sessions, or 256 sessions of minutes)"
)


@pytest.mark.parametrize(("kind", "name"), PERIOD_COUNTS)
@pytest.mark.parametrize("value", [100_001, 2_147_483_648, 9_223_372_036_854_775_807])
def test_a_count_of_periods_past_100000_is_refused(kind: str, name: str, value: int) -> None:
    """Every count of periods takes up to 100,000 (400 years of sessions); past it (2**31 took
    more than 12 GB, 2**63 - 1 overflowed) the rule is refused, named by index and id."""
    assert error(f'{OK}\n[[rules]]\nid = "x"\n{kind}\n{name} = {value}\n') == (
        f'rules[1] (id "x").{name}: {TOO_MANY}'
    )
    assert parse_rules(f'[[rules]]\nid = "x"\n{kind}\n{name} = 100000\n').rules


def test_horizons_and_top_past_100000_are_refused() -> None:
    """A horizon past 100,000 periods is refused as the other counts are, a horizon given twice
    (which broke the history's table) and a `top` past 100,000 symbols too."""
    surge = 'id = "x"\nkind = "surge"\nsymbols = ["A"]\n'
    assert error(f"{OK}\n[[rules]]\n{surge}horizons = [5, 9223372036854775807]\n") == (
        f'rules[1] (id "x").horizons[1]: {TOO_MANY}'
    )
    assert error(f"{OK}\n[[rules]]\n{surge}horizons = [5, 21, 5]\n") == (
        'rules[1] (id "x").horizons: 5 is given twice'
    )
    movers = 'id = "x"\nkind = "movers"\nuniverse = true\n'
    assert error(f"{OK}\n[[rules]]\n{movers}top = 100001\n") == (
        'rules[1] (id "x").top: Expected `int` <= 100000'
    )
    assert parse_rules(f"[[rules]]\n{surge}horizons = [5, 100000]\n").rules
