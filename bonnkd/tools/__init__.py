"""Commands that read finished runs: report, summary, inspect."""
