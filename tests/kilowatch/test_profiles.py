"""Every shipped profile loads and decodes its test vectors; broken profiles fail with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kilowatch.profiles import builtin_dir, builtin_ids, load_builtin, load_file, vector_failures
from kilowatch.yamlconfig import ConfigError

SHIPPED = sorted(builtin_dir().glob("*.yaml"))


def test_sdm630_is_shipped_with_the_published_addresses() -> None:
    assert "eastron-sdm630" in builtin_ids()
    p = load_builtin("eastron-sdm630")
    # Addresses the issue quotes from Eastron's map: manual 30001 / 30053 / 30073 = wire 0 / 52 / 72.
    assert (p.register("voltage_l1_v").address, p.register("voltage_l1_v").manual_address) == (0, 30001)
    assert (p.register("active_power_w").address, p.register("active_power_w").manual_address) == (52, 30053)
    assert p.register("energy_import_kwh").address == 72
    assert all(r.table.function_code == 4 for r in p.registers)
    assert load_builtin("SDM630") is p  # aliases resolve, case-insensitively


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_profile_test_vectors_decode(path: Path) -> None:
    profile = load_file(path)
    assert profile.test_vectors, "every profile ships test vectors"
    assert vector_failures(profile) == []


def test_a_wrong_vector_is_reported() -> None:
    profile = load_builtin("eastron-sdm630")
    bad = profile.model_copy(
        update={
            "test_vectors": [profile.test_vectors[0].model_copy(update={"expect": {"voltage_l1_v": 231.0}})]
        }
    )
    assert vector_failures(bad) == ["eastron-sdm630: test_vectors[0] voltage_l1_v: expected 231.0, got 230.0"]


def _write(tmp_path: Path, body: str, name: str = "acme-x1") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


HEADER = "id: acme-x1\nmanufacturer: Acme\nmodel: X1\nsource: Acme X1 manual v1.0, table 3\nregisters:\n"


@pytest.mark.parametrize(
    ("registers", "expected"),
    [
        (
            "  - {quantity: volts, address: 0}\n",
            "acme-x1.yaml:6 registers[0].quantity: 'volts': Value error, unknown quantity",
        ),
        (
            "  - {quantity: voltage_l1_v, address: 0, manual_address: 30003}\n",
            "acme-x1.yaml:6 registers[0]: Value error, manual_address 30003 does not match input register 0x0000",
        ),
        (
            "  - {quantity: voltage_l1_v, address: 0}\n  - {quantity: voltage_l2_v, address: 1}\n",
            "acme-x1.yaml:7 registers[1].address: 'voltage_l2_v' overlaps 'voltage_l1_v'",
        ),
        (
            "  - {quantity: voltage_l1_v, address: 0, type: float33}\n",
            "acme-x1.yaml:6 registers[0].type: 'float33'",
        ),
        (
            "  - {quantity: voltage_l1_v, address: 0, colour: red}\n",
            "acme-x1.yaml:6 registers[0].colour: extra inputs",
        ),
    ],
)
def test_broken_profiles_name_file_line_and_key(tmp_path: Path, registers: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(_write(tmp_path, HEADER + registers))
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_id_must_match_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must match the file name"):
        load_file(_write(tmp_path, HEADER + "  - {quantity: voltage_l1_v, address: 0}\n", name="other"))


def test_unknown_profile_lists_the_shipped_ones() -> None:
    with pytest.raises(KeyError, match="eastron-sdm630"):
        load_builtin("no-such-meter")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_profile_can_be_recognised_by_a_scan(path: Path) -> None:
    assert load_file(path).fingerprint, "a profile without a fingerprint is never identified by a scan"


@pytest.mark.parametrize(
    ("fingerprint", "expected"),
    [
        (
            "  - {quantity: frequency_hz, min: 45, max: 65}\n",
            "acme-x1.yaml:8 fingerprint[0].quantity: reads 'frequency_hz', which this profile does not map",
        ),
        (
            "  - {quantity: voltage_l1_v, min: 300, max: 100}\n",
            "acme-x1.yaml:8 fingerprint[0]: Value error, max 100 is below min 300",
        ),
        (
            "  - {quantity: voltage_l1_v, min: 0}\n",
            "acme-x1.yaml:8 fingerprint[0]: Value error, give equals, or both min and max",
        ),
    ],
)
def test_broken_fingerprints_name_file_line_and_key(tmp_path: Path, fingerprint: str, expected: str) -> None:
    body = HEADER + "  - {quantity: voltage_l1_v, address: 0}\nfingerprint:\n" + fingerprint
    with pytest.raises(ConfigError) as info:
        load_file(_write(tmp_path, body))
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
