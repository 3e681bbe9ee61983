"""What a rules file is told of symbols no file or feed brings (an error, as replay rejects them
as `bad_symbol`) and of settings a rule will not act on as written (a warning: the rule still
runs): `exclude` on a rule of symbols, symbols on a rotation, a 1m window longer than its
session, a symbol with a space, a movers `top` that ranks every symbol listed, a
percent-looking `min_return = 1`."""

from __future__ import annotations

import pytest

from monitor.core.rules.spec import RuleError, parse_rules, rule_warnings
from monitor.core.rules.unheeded import EXTENDED_MINUTES


def rule(text: str) -> str:
    """A rules file of one rule, id "x"."""
    return f'[[rules]]\nid = "x"\n{text}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kind = "surge"\nsymbols = ["IWM", ""]', "symbols: '' is no symbol: it is empty"),
        ('kind = "surge"\nsymbols = ["IWM\\u00a0"]',
         "symbols: 'IWM\\xa0' is no symbol: it has a space at its start or end"),
        ('kind = "surge"\nsymbols = ["IW\\u001bM"]',
         "symbols: 'IW\\x1bM' is no symbol: it has a control or formatting character"),
        (f'kind = "surge"\nsymbols = ["{"A" * 65}"]',
         f"symbols: '{'A' * 65}' is no symbol: it is longer than 64 characters"),
        ('kind = "surge"\nuniverse = true\nexclude = [" ^RUT"]',
         "exclude: ' ^RUT' is no symbol: it has a space at its start or end"),
        ('kind = "rotation"\nlarge = ""', "large: '' is no symbol: it is empty"),
    ],
)  # fmt: skip
def test_a_symbol_no_file_or_feed_brings_is_an_error(text: str, message: str) -> None:
    """An empty symbol, one blank at an end or with a control character, or past 64
    characters (each `bad_symbol` in replay, so the rule never saw it) is refused naming the
    rule and the field; it was accepted and the rule never fired."""
    with pytest.raises(RuleError) as caught:
        parse_rules(rule(text))
    assert str(caught.value) == f'rules[0] (id "x").{message}'


@pytest.mark.parametrize(
    ("text", "warnings"),
    [
        ('kind = "surge"\nsymbols = ["^RUT"]\nexclude = ["^RUT"]',
         ["exclude: read with universe = true only, ignored here: ^RUT still fires, remove it"
          " from symbols"]),
        ('kind = "surge"\nuniverse = true\nexclude = ["^RUT"]', []),
        ('kind = "rotation"\nsymbols = ["SPY"]',
         ["symbols: ignored: a rotation compares small (IWM) with large (QQQ) only; remove it"]),
        ('kind = "rotation"\nuniverse = true',
         ["universe: ignored: a rotation compares small (IWM) with large (QQQ) only; remove it"]),
        ('kind = "surge"\nsymbols = ["a b"]',
         ["symbols: 'a b': no live feed sends a symbol with a space"]),
        ('kind = "surge"\ntimeframe = "1m"\nwindow = 400\nuniverse = true',
         ["window: 400 minutes never fit in a session: a 1m window stays within its session (390"
          " minutes), so the rule never fires"]),
        ('kind = "streak"\ntimeframe = "1m"\ncount = 390\nuniverse = true',
         ["count: 390 minutes never fit in a session: a 1m window stays within its session (390"
          " minutes), so the rule never fires"]),
        ('kind = "surge"\ntimeframe = "1m"\nwindow = 389\nuniverse = true', []),
        ('kind = "surge"\ntimeframe = "1d"\nwindow = 400\nuniverse = true', []),
        ('kind = "movers"\ntimeframe = "1m"\nwindow = 400\nuniverse = true', []),
        ('kind = "movers"\nsymbols = ["IWM"]\ntop = 3',
         ["top: 3 of the 1 symbols ranked: every one that rises is a top mover; list more"
          " symbols, or set universe = true"]),
        ('kind = "movers"\nsymbols = ["A", "B", "C"]\ntop = 3',
         ["top: 3 of the 3 symbols ranked: every one that rises is a top mover; list more"
          " symbols, or set universe = true"]),
        ('kind = "movers"\nsymbols = ["A", "B", "C"]\ntop = 2', []),
        ('kind = "movers"\nuniverse = true\ntop = 3', []),
        ('kind = "surge"\nsymbols = ["A"]\nmin_return = 1',
         ["min_return: 1 is 100%; it is a fraction, 0.10 means 10%: did you mean 0.01?"]),
        ('kind = "surge"\nsymbols = ["A"]\nmin_return = 0.99', []),
    ],
)  # fmt: skip
def test_settings_a_rule_will_not_act_on_are_warned_of(text: str, warnings: list[str]) -> None:
    """`exclude` on a rule of symbols (ignored: ^RUT still fired), `symbols` or `universe` on a
    rotation (ignored), a symbol with a space, a movers rule's `top` as large as its list of
    symbols (each that rose was "#1"), a surge's window or a streak's count of 390
    minutes or more on a 1m rule (a minute window stays in its session: it never fired) and
    `min_return = 1` (at the percent bound: it was said nothing of) are warned of; the rule
    loads and runs as before."""
    assert rule_warnings(parse_rules(rule(text))) == [f'rules[0] (id "x").{w}' for w in warnings]


def test_a_minute_window_that_fits_an_extended_session_is_no_warning() -> None:
    """With extended hours a session has 960 minutes: a 1m window of 400 fits (no warning), one
    of 960 does not."""
    surge = 'kind = "surge"\ntimeframe = "1m"\nuniverse = true\nwindow = '
    assert rule_warnings(parse_rules(rule(surge + "400")), session_minutes=EXTENDED_MINUTES) == []
    assert rule_warnings(parse_rules(rule(surge + "960")), session_minutes=EXTENDED_MINUTES) == [
        'rules[0] (id "x").window: 960 minutes never fit in a session: a 1m window stays within'
        " its session (960 minutes), so the rule never fires"
    ]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('kind = "squeeze"\nuniverse = true\nvolume_ratio = inf', "volume_ratio"),
        ('kind = "fade"\nuniverse = true\nrise = inf', "rise"),
        ('kind = "squeeze"\nuniverse = true\nmin_days_to_cover = inf', "min_days_to_cover"),
    ],
)
def test_a_rule_parameter_that_is_not_finite_is_an_error(text: str, field: str) -> None:
    """`volume_ratio = inf` or `rise = inf` passed "greater than 0" and the rule never fired:
    refused naming the rule and field, as the configs refuse `inf`."""
    with pytest.raises(RuleError) as caught:
        parse_rules(rule(text))
    assert str(caught.value) == (
        f'rules[0] (id "x").{field}: not a finite number (inf is no setting: write the number'
        " meant)"
    )
