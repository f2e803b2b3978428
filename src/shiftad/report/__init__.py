"""The report stage: tables and figures in report/."""
