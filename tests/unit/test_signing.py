"""The signature of internal commands: what it binds, where the embedded key lives, which commands need it."""

from __future__ import annotations

import inspect
import stat
from pathlib import Path

import pytest

import contracts
from contracts import Command
from emailer.config import ConfigError, load_settings
from emailer.signing import INTERNAL_COMMANDS, Signer


def test_every_command_documented_as_internal_needs_a_signature() -> None:
    commands = [c for _, c in inspect.getmembers(contracts, inspect.isclass) if issubclass(c, Command)]
    internal = {c.type_name() for c in commands if (c.__doc__ or "").startswith("Internal:")}
    assert internal == INTERNAL_COMMANDS == {"DispatchEmail", "RecordDeliveryReports"}


def test_rotation_the_first_key_signs_every_key_verifies() -> None:
    old, new = "o" * 32, "n" * 32
    signature = Signer.from_setting(old).sign("m-1", "DispatchEmail", b"{}")
    rotating = Signer.from_setting(f"{new},{old}")
    assert rotating.verify("m-1", "DispatchEmail", b"{}", signature)
    assert Signer.from_setting(new).verify(
        "m-1", "DispatchEmail", b"{}", rotating.sign("m-1", "DispatchEmail", b"{}")
    )
    assert not Signer.from_setting(new).verify("m-1", "DispatchEmail", b"{}", signature)


def test_id_and_type_cannot_trade_characters() -> None:
    signer = Signer.generated()
    assert signer.sign("ab", "c", b"") != signer.sign("a", "bc", b"")


def test_the_embedded_key_is_kept_under_var_dir_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "var" / "internal.key"
    first = Signer.kept_in(path)
    again = Signer.kept_in(path)  # a restart: outbox rows signed before it still verify
    assert again.verify("m", "DispatchEmail", b"{}", first.sign("m", "DispatchEmail", b"{}"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rabbitmq_needs_a_key_the_embedded_bus_does_not(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EMAILER_INTERNAL_KEY is required"):
        load_settings(_env_file=None, var_dir=tmp_path, bus_url="amqp://guest:guest@127.0.0.1:5672//")
    with pytest.raises(ConfigError, match="EMAILER_INTERNAL_KEY: each key must have at least 32"):
        load_settings(_env_file=None, var_dir=tmp_path, internal_key="short")
    assert load_settings(_env_file=None, var_dir=tmp_path).internal_key is None
