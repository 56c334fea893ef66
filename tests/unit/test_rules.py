"""Plausible's validation rules as pure functions (plausible_rules)."""

from __future__ import annotations

import pytest

import plausible_rules as rules


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://www.Example.com/", "example.com"),
        ("  HTTP://Example.COM/blog/ ", "example.com/blog"),
        ("http://https://www.a.test", "a.test"),
        ("//www.www.a.test//", "www.a.test"),
        ("müllers-café.test", "müllers-café.test"),
        ("音乐.cn", "音乐.cn"),
    ],
)
def test_normalise_domain_follows_plausible_order(raw: str, expected: str) -> None:
    assert rules.normalise_domain(raw) == expected


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("", "domain: can't be blank"),
        ("a b.test", "domain: only letters, numbers, slashes, underscores and period allowed"),
        ("100%.test", "domain: only letters, numbers, slashes, underscores and period allowed"),
        ("quero:café.test", "domain: must not contain URI reserved characters :?#[]@!$&'()*+,;="),
        ("h&llo.test", "domain: must not contain URI reserved characters :?#[]@!$&'()*+,;="),
        # Both checks fail: the reserved-characters error is added last and reported.
        (
            "iamnot sur&about?this.com",
            "domain: must not contain URI reserved characters :?#[]@!$&'()*+,;=",
        ),
        ("example.com/blog", None),
        ("до.101домен.рф/pages", None),  # noqa: RUF001 - an IDN on purpose
        ("under_score-dash.test", None),
    ],
)
def test_domain_error_gives_plausibles_message(domain: str, message: str | None) -> None:
    assert rules.domain_error(domain) == message


def test_domain_taken_message_keeps_the_heredoc_newline() -> None:
    assert rules.DOMAIN_TAKEN_MESSAGE.endswith("support@plausible.io\n")
    assert rules.MAX_DOMAIN_LENGTH == 255


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("Etc/UTC", True),
        ("Europe/Berlin", True),
        ("d", False),
        ("", False),
        (None, False),
        (3, False),
    ],
)
def test_is_valid_timezone_accepts_iana_names_only(name: object, valid: bool) -> None:
    assert rules.is_valid_timezone(name) is valid


def test_goal_normalisation() -> None:
    assert rules.normalise_page_path("  blog/** ") == "/blog/**"
    assert rules.normalise_page_path("/x") == "/x"
    assert rules.normalise_event_name("  Signup ") == "Signup"
    assert rules.default_display_name(event_name="Signup", page_path=None) == "Signup"
    assert rules.default_display_name(event_name=None, page_path="/blog") == "Visit /blog"


def test_reserved_shared_link_names() -> None:
    assert "WordPress - Shared Dashboard" in rules.RESERVED_SHARED_LINK_NAMES
