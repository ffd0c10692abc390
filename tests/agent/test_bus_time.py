"""The RTU bus-time model against figures computed by hand from the Modbus serial-line specification."""

from __future__ import annotations

import pytest

from agent.bus_time import RtuTiming, SerialLine, rtu_read_bytes, tcp_read_bytes
from kilowatch.profiles import Connection


@pytest.mark.parametrize(
    ("line", "bits"),
    [
        (SerialLine(baud=9600), 10),  # start + 8 data + 1 stop
        (SerialLine(baud=9600, parity="E"), 11),
        (SerialLine(baud=9600, parity="O", stopbits=2), 12),
        (SerialLine(baud=9600, stopbits=2), 11),
        (SerialLine(baud=9600, parity="E", bytesize=7), 10),
    ],
)
def test_bits_per_character(line: SerialLine, bits: int) -> None:
    assert line.bits_per_char == bits


def test_character_time_and_silence_at_9600_8n1() -> None:
    line = SerialLine(baud=9600)
    assert line.char_s == pytest.approx(1 / 960)  # 10 bits at 9600 bit/s
    assert line.silence_s == pytest.approx(3.5 / 960)
    assert str(line) == "9600 8N1"


def test_silence_is_counted_in_characters_up_to_19200_and_fixed_above() -> None:
    assert SerialLine(baud=19200).silence_s == pytest.approx(3.5 * 10 / 19200)
    assert SerialLine(baud=38400).silence_s == pytest.approx(0.00175)
    assert SerialLine(baud=115200, parity="E").silence_s == pytest.approx(0.00175)


def test_frame_sizes_of_a_read() -> None:
    assert rtu_read_bytes(2) == (8, 9)  # unit fc addr(2) count(2) crc(2); unit fc n data(4) crc(2)
    assert rtu_read_bytes(36) == (8, 77)
    assert tcp_read_bytes(2) == (12, 13)  # MBAP 7 + PDU 5; MBAP 7 + fc n data(4)


def test_read_of_two_registers_at_9600_8n1() -> None:
    # 8 + 9 bytes and two 3.5-character silences = 24 characters of 10 bits = 25 ms, plus 10 ms turnaround.
    timing = RtuTiming(line=SerialLine(baud=9600), turnaround_s=0.010)
    assert timing.read_s(2) == pytest.approx(0.035)


def test_read_of_36_registers_at_9600_8e1() -> None:
    # 8 + 77 bytes + 7 silence characters = 92 characters x 11 bits / 9600 = 105.4167 ms, plus 10 ms.
    timing = RtuTiming(line=SerialLine(baud=9600, parity="E"))
    assert timing.read_s(36) == pytest.approx(0.1054166667 + 0.010)


def test_read_above_19200_uses_the_fixed_silence() -> None:
    # 8 + 25 bytes = 33 characters x 10 bits / 38400 = 8.59375 ms; 2 x 1.75 ms; 5 ms turnaround.
    timing = RtuTiming(line=SerialLine(baud=38400), turnaround_s=0.005)
    assert timing.read_s(10) == pytest.approx(0.00859375 + 0.0035 + 0.005)


def test_a_pause_before_each_request_adds_to_it() -> None:
    line = SerialLine(baud=9600)
    assert RtuTiming(line=line, pause_s=0.05).read_s(2) == pytest.approx(
        RtuTiming(line=line).read_s(2) + 0.05
    )


def test_line_from_a_profile_connection() -> None:
    line = SerialLine.of(Connection(baud=19200, parity="E", stopbits=1))
    assert (line.baud, line.parity, line.bytesize, line.stopbits) == (19200, "E", 8, 1)


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="baud"):
        SerialLine(baud=0)
    with pytest.raises(ValueError, match="negative"):
        RtuTiming(line=SerialLine(baud=9600), turnaround_s=-0.001)
    with pytest.raises(ValueError, match="negative"):
        RtuTiming(line=SerialLine(baud=9600), pause_s=-1)
