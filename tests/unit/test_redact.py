"""Scrubbing secrets out of error texts (phasestream/redact.py): pure."""

from __future__ import annotations

import pytest

from phasestream.redact import REDACTED, redact_url, scrub, url_secrets

HOOK = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (HOOK, "https://hooks.slack.com/…"),
        ("http://user:pw@127.0.0.1:8080/a?token=t", "http://127.0.0.1:8080/…"),
        ("http://127.0.0.1:99999/x", REDACTED),  # a port that is no port
        ("http://[::1/x", REDACTED),
        ("hooks.slack.com/services/T/B/X", REDACTED),
    ],
)
def test_a_url_keeps_only_where_it_points(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_replaces_known_secrets_and_every_url_path() -> None:
    text = (
        f"TooManyRedirects: 0, message='Got more than 10 redirects', url='{HOOK}'; "
        "path /services/T000/B000/XXXXSECRET; other https://example.com/private/path"
    )
    clean = scrub(text, *url_secrets(HOOK))
    assert "XXXXSECRET" not in clean
    assert "private" not in clean
    assert "https://example.com/…" in clean
    assert "Got more than 10 redirects" in clean


def test_url_secrets_are_the_url_its_path_query_and_password() -> None:
    assert url_secrets("https://u:pw@h.example/p/q?k=v") == (
        "https://u:pw@h.example/p/q?k=v",
        "/p/q",
        "k=v",
        "pw",
    )
    assert url_secrets("http://[::1/x") == ("http://[::1/x",)
    assert scrub("nothing secret", None, "") == "nothing secret"
