"""Reports of a run: report.json / report.csv / report.md, printed table, PNG plots; with logger=wandb
the run's wandb logging (wandb_log), reading runs back (wandb_read) and the Fig. 4/5 panels (dashboard)."""

from weightsim.report.tables import markdown_table, write_report, write_run
from weightsim.report.plots import plot_accuracy, plot_cmc

__all__ = ["markdown_table", "write_report", "write_run", "plot_accuracy", "plot_cmc"]
