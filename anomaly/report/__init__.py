"""The inspection report: one self-contained HTML page per results folder."""

from anomaly.report.build import ReportInfo, build_report

__all__ = ["ReportInfo", "build_report"]
