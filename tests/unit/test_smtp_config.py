"""E-mail alerts' configuration as the settings give it."""

from __future__ import annotations

from pydantic import SecretStr

from phasestream.consumers import smtp_config
from phasestream.settings import Settings


def test_recipients_are_split_on_commas_and_trimmed() -> None:
    config = smtp_config(
        Settings(smtp_host="mail.example", smtp_to=" ops@example.org, ,dev@example.org ")
    )
    assert config is not None
    assert config.recipients == ("ops@example.org", "dev@example.org")
    assert (config.host, config.password) == ("mail.example", None)


def test_no_host_or_no_recipient_means_no_email() -> None:
    assert smtp_config(Settings(smtp_to="ops@example.org")) is None
    assert smtp_config(Settings(smtp_host="mail.example", smtp_to=" , ")) is None


def test_the_password_is_passed_on_but_never_shown() -> None:
    config = smtp_config(
        Settings(
            smtp_host="mail.example", smtp_to="ops@example.org", smtp_password=SecretStr("pw-9")
        )
    )
    assert config is not None
    assert config.password == "pw-9"
    assert "pw-9" not in repr(config)
