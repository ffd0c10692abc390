"""`kilowatch profiles check | new | docs`: mistakes explained at file, line and key; a profile scaffolded
from a manual's CSV; the meters page generated from the library and never stale."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from kilowatch.profile_library import meters_markdown, scaffold
from kilowatch.profiles import Table, builtin_ids, load_builtin, load_file
from kilowatch.profiles_cli import app
from tests.paths import REPO

RUNNER = CliRunner()

HEADER = """\
id: acme-x1
manufacturer: Acme
model: X1
source: Acme X1 manual v1, table 3
registers:
  - {quantity: voltage_l1_v, address: 0x0000}
  - {quantity: frequency_hz, address: 0x0002}
  - {quantity: energy_import_kwh, address: 0x0010, type: uint32, scale: 0.001}
fingerprint:
  - {quantity: frequency_hz, min: 45, max: 66}
"""


def check(*paths: Path) -> tuple[int, str]:
    result = RUNNER.invoke(app, ["check", *map(str, paths)])
    return result.exit_code, result.output


def test_a_wrong_word_order_is_named_at_the_expected_value(tmp_path: Path) -> None:
    path = tmp_path / "acme-x1.yaml"
    path.write_text(
        HEADER + "test_vectors:\n  - words: {0x0000: [0x0000, 0x4366]}\n    expect: {voltage_l1_v: 230.0}\n"
    )
    code, out = check(path)
    assert code == 2
    assert "acme-x1.yaml:13 test_vectors[0].expect.voltage_l1_v: expected 230.0, got" in out
    assert "read as float32 CDAB the words give 230.0: check type and word_order" in out


def test_a_wrong_scale_and_missing_words_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "acme-x1.yaml"
    vectors = (
        "test_vectors:\n"
        "  - words: {0x0010: [0x0001, 0xE240]}\n"
        "    expect: {energy_import_kwh: 123456}\n"
        "  - words: {0x0000: [0x4366]}\n"
        "    expect: {voltage_l1_v: 230.0}\n"
    )
    path.write_text(HEADER + vectors)
    code, out = check(path)
    assert code == 2
    assert (
        "acme-x1.yaml:13 test_vectors[0].expect.energy_import_kwh: expected 123456.0, got 123.456; off by a factor of 10^3"
        in out
    )
    assert (
        "acme-x1.yaml:15 test_vectors[1].expect.voltage_l1_v: expected 230.0, got not decoded; the words do not cover 0x0001"
        in out
    )


def test_a_fingerprint_clash_names_both_files_and_a_way_out(tmp_path: Path) -> None:
    small = tmp_path / "acme-x1.yaml"
    small.write_text(
        HEADER.replace("  - {quantity: energy_import_kwh, address: 0x0010, type: uint32, scale: 0.001}\n", "")
    )
    big = tmp_path / "acme-x2.yaml"
    big.write_text(
        HEADER.replace("acme-x1", "acme-x2").replace("model: X1", "model: X2")
        + "  - {quantity: energy_import_kwh, min: 0, max: 1.0e+9}\n"
    )
    code, out = check(small, big)
    assert code == 2
    assert (
        "acme-x1.yaml:8 fingerprint: also identifies a acme-x2 meter (acme-x2.yaml); "
        "add `{refuses: {table: input, address: 0x0010, count: 2}}` (acme-x2 maps energy_import_kwh there)"
    ) in out
    assert "acme-x2.yaml:9 fingerprint: also identifies" not in out


def test_a_fingerprint_that_misses_its_own_map_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "acme-x1.yaml"
    path.write_text(
        HEADER + "  - {refuses: {address: 0x0020}}\n  - {quantity: voltage_l1_v, min: 0, max: 100}\n"
    )
    code, out = check(path)
    assert code == 2
    assert (
        "acme-x1.yaml:9 fingerprint: does not identify its own map on a plausible reading (fingerprint[2] reads input 0x0000"
        in out
    )


def test_the_shipped_library_checks_clean() -> None:
    code, out = check()
    assert code == 0, out


CSV = """\
Name,Address,Type,Unit,Scale
voltage_l1_v,30001,FLOAT,V,
current_l1_a,30007,float32,mA,
energy_import_kwh,40101,UINT32,Wh,
power_factor,30031,int16,%,0.1
voltage_l2_v,30003,float,V,
Neutral current,30225,float,A,
"""


def test_a_csv_register_table_becomes_a_profile(tmp_path: Path) -> None:
    made = scaffold(
        CSV, profile_id="acme-x1", manufacturer="Acme", model="X1", source="Acme X1 manual v1, table 3"
    )
    assert made.warnings == [
        "CSV line 7: 'Neutral current' is not a quantity name; rename it (`kilowatch profiles show` lists them)"
    ]
    path = tmp_path / "acme-x1.yaml"
    path.write_text(made.text.replace("Neutral current", "current_n_a"))
    profile = load_file(path)
    assert profile.phases == 3
    assert [
        (r.quantity, r.table, r.address, r.manual_address, r.type.value, r.scale) for r in profile.registers
    ] == [
        ("voltage_l1_v", Table.INPUT, 0, 30001, "float32", 1.0),
        ("current_l1_a", Table.INPUT, 6, 30007, "float32", 0.001),
        ("energy_import_kwh", Table.HOLDING, 100, 40101, "uint32", 0.001),
        ("power_factor", Table.INPUT, 30, 30031, "int16", 0.001),
        ("voltage_l2_v", Table.INPUT, 2, 30003, "float32", 1.0),
        ("current_n_a", Table.INPUT, 224, 30225, "float32", 1.0),
    ]


def test_profiles_new_writes_the_scaffold_and_refuses_to_overwrite(tmp_path: Path) -> None:
    csv_file = tmp_path / "map.csv"
    csv_file.write_text("quantity,address,type\nvoltage_l1_v,0x10,float32\n")
    out = tmp_path / "acme-x1.yaml"
    args = ["new", "--csv", str(csv_file), "--id", "acme-x1", "--manufacturer", "Acme", "--model", "X1",
            "--source", "Acme X1 manual v1", "--table", "holding", "--word-order", "CDAB", "--out", str(out)]  # fmt: skip
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 0, result.output
    profile = load_file(out)
    assert (profile.registers[0].table, profile.registers[0].address, profile.registers[0].word_order.value) == (
        Table.HOLDING, 0x10, "CDAB",
    )  # fmt: skip
    again = RUNNER.invoke(app, args)
    assert again.exit_code == 2
    assert "exists" in again.output


def test_the_meters_page_is_generated_from_the_library() -> None:
    page = (REPO / "docs" / "meters.md").read_text()
    assert page == meters_markdown([load_builtin(pid) for pid in builtin_ids()]), (
        "run `kilowatch profiles docs`"
    )
    sdm = load_builtin("eastron-sdm630")
    assert f"| {sdm.manufacturer} {sdm.model} | `eastron-sdm630` |" in page


def test_profiles_docs_check_reports_a_stale_page(tmp_path: Path) -> None:
    page = tmp_path / "meters.md"
    page.write_text("old\n")
    result = RUNNER.invoke(app, ["docs", "--check", "--out", str(page)])
    assert result.exit_code == 2
    assert "out of date" in result.output
    assert RUNNER.invoke(app, ["docs", "--out", str(page)]).exit_code == 0
    assert RUNNER.invoke(app, ["docs", "--check", "--out", str(page)]).exit_code == 0


def test_an_alias_two_profiles_claim_is_named(tmp_path: Path) -> None:
    first = tmp_path / "acme-x1.yaml"
    first.write_text(HEADER.replace("registers:", "aliases: [x1]\nregisters:"))
    second = tmp_path / "acme-x2.yaml"
    second.write_text(
        HEADER.replace("id: acme-x1", "id: acme-x2").replace("registers:", "aliases: [X1]\nregisters:")
    )
    code, out = check(first, second)
    assert code == 2
    assert "acme-x2.yaml:5 aliases[0]: 'X1' already names acme-x1 (acme-x1.yaml)" in out


def test_a_profile_without_three_vectors_or_a_fingerprint_is_not_finished(tmp_path: Path) -> None:
    path = tmp_path / "acme-x1.yaml"
    path.write_text(
        HEADER.split("fingerprint:")[0]
        + "test_vectors:\n  - words: {0x0002: [0x4248, 0]}\n    expect: {frequency_hz: 50}\n"
    )
    code, out = check(path)
    assert code == 2
    assert "acme-x1.yaml:9 test_vectors: 1 test vectors; at least 3 are needed" in out
    assert "acme-x1.yaml:1 fingerprint: empty; a scan could never name this model" in out
