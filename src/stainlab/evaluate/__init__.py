"""The evaluation harness: methods x data -> tables, montages and an HTML report."""

from stainlab.evaluate.harness import METRICS, Harness
from stainlab.evaluate.report import markdown_table, write_report

__all__ = ["Harness", "METRICS", "write_report", "markdown_table"]
