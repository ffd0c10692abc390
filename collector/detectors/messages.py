"""The words of every finding, in English and Vietnamese, in one table so the two never drift apart."""

from __future__ import annotations

from collector.detectors.findings import Detector

_TEXT: dict[tuple[Detector, str], tuple[str, str]] = {
    (Detector.AFTER_HOURS, "R4"): (
        "{meter}: load left on after hours since {since}",
        "{meter}: thiết bị không tắt ngoài giờ làm việc từ {since}",
    ),
    (Detector.IDLE, "R10"): (
        "{meter}: running without load since {since}",
        "{meter}: thiết bị chạy không tải từ {since}",
    ),
    (Detector.PEAK, "overuse"): (
        "{meter}: using more than usual in the peak band since {since}",
        "{meter}: sử dụng điện cao hơn thường lệ trong giờ cao điểm từ {since}",
    ),
    (Detector.PEAK, "large_machine_in_peak"): (
        "{meter}: large machine loaded in the peak band since {since}",
        "{meter}: máy công suất lớn chạy có tải trong giờ cao điểm từ {since}",
    ),
    (Detector.PEAK, "demand_warning"): (
        "{meter}: predicted demand near its limit since {since}",
        "{meter}: công suất dự báo gần tới mức giới hạn từ {since}",
    ),
    (Detector.PEAK, "demand_exceeded"): (
        "{meter}: predicted demand over its limit since {since}",
        "{meter}: công suất dự báo vượt mức giới hạn từ {since}",
    ),
    (Detector.LIGHTING, "on_by_day"): (
        "{meter}: street lights burning outside their window since {since}",
        "{meter}: đèn chiếu sáng công cộng bật ngoài khung giờ từ {since}",
    ),
    (Detector.LIGHTING, "dark_at_night"): (
        "{meter}: street lights dark inside their window since {since}",
        "{meter}: đèn chiếu sáng công cộng tắt trong khung giờ chiếu sáng từ {since}",
    ),
    (Detector.ADVERTISING, "R7"): (
        "{meter}: advertising lighting not cut by half in the evening peak since {since}",
        "{meter}: đèn quảng cáo không giảm 50% công suất trong giờ cao điểm tối từ {since}",
    ),
    (Detector.DATA_QUALITY, "no_data"): (
        "{meter}: no readings since {since}",
        "{meter}: không nhận được số liệu từ {since}",
    ),
    (Detector.DATA_QUALITY, "frozen"): (
        "{meter}: readings frozen since {since}",
        "{meter}: số liệu đồng hồ không thay đổi từ {since}",
    ),
    (Detector.DATA_QUALITY, "counter_reset"): (
        "{meter}: energy counter went backwards at {since} (reset or meter replaced)",
        "{meter}: chỉ số điện năng bị giảm lúc {since} (đặt lại hoặc thay công tơ)",
    ),
    (Detector.DATA_QUALITY, "gateway_offline"): (
        "{meter}: gateway offline since {since} (its last will)",
        "{meter}: bộ thu thập mất kết nối từ {since}",
    ),
    (Detector.DATA_QUALITY, "untrusted_clock"): (
        "{meter}: gateway clock could not be trusted from {since}",
        "{meter}: đồng hồ của bộ thu thập không tin cậy từ {since}",
    ),
}


def _vnd(amount: float) -> str:
    return f"{amount:,.0f}".replace(",", ".")


def message(
    detector: Detector, rule: str, *, meter: str, since: str, kwh: float, vnd: float, magnitude: float | None
) -> tuple[str, str]:
    """(English, Vietnamese) text of a finding; the waste is appended when there is any."""
    en, vi = (t.format(meter=meter, since=since) for t in _TEXT[(detector, rule)])
    if kwh > 0:
        en += f"; wasted {kwh:.1f} kWh ({_vnd(vnd)} VND)"
        vi += f"; lãng phí {kwh:.1f} kWh ({_vnd(vnd)} đồng)"
    return en, vi
