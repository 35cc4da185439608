"""The experiment behind docs/results.md, in parts: data, models, arms, runs, measures, posthoc, plots, report."""
