"""infership.bench — benchmark harness: scenarios, statistics, results, comparison, reports."""
