"""infership.bench — benchmark harness: scenarios, statistics, results, comparison, reports.

Importing this package is cheap: the submodules (numpy; matplotlib only for reports) load on first use of
a name re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infership.runtime.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ABConfig": "infership.bench.ab",
    "ABOutcome": "infership.bench.ab",
    "run_ab": "infership.bench.ab",
    "junit_xml": "infership.bench.ci",
    "markdown_summary": "infership.bench.ci",
    "BenchConfig": "infership.bench.config",
    "PlannedRun": "infership.bench.config",
    "plan_runs": "infership.bench.config",
    "run_benchmark": "infership.bench.runner",
    "run_sweep": "infership.bench.harness",
    "measure_overhead": "infership.bench.harness",
    "Scenario": "infership.bench.scenarios",
    "StopRule": "infership.bench.scenarios",
    "MeasurementError": "infership.bench.scenarios",
    "InputPool": "infership.bench.inputs",
    "random_pool": "infership.bench.inputs",
    "model_pool": "infership.bench.inputs",
    "array_pool": "infership.bench.inputs",
    "image_pool": "infership.bench.inputs",
    "LatencySummary": "infership.bench.stats",
    "Stability": "infership.bench.stats",
    "RatioInterval": "infership.bench.stats",
    "summarize": "infership.bench.stats",
    "check_stability": "infership.bench.stats",
    "bootstrap_ratio": "infership.bench.stats",
    "BenchResults": "infership.bench.results",
    "RunResult": "infership.bench.results",
    "ResultsError": "infership.bench.results",
    "RunNotFound": "infership.bench.results",
    "load_results": "infership.bench.results",
    "save_results": "infership.bench.results",
    "Comparison": "infership.bench.compare",
    "FigureChange": "infership.bench.compare",
    "Thresholds": "infership.bench.compare",
    "Verdict": "infership.bench.compare",
    "NotComparableError": "infership.bench.compare",
    "compare_results": "infership.bench.compare",
    "write_report": "infership.bench.report",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # pragma: no cover
    from .ab import ABConfig, ABOutcome, run_ab  # noqa: F401
    from .ci import junit_xml, markdown_summary  # noqa: F401
    from .compare import (  # noqa: F401
        Comparison,
        FigureChange,
        NotComparableError,
        Thresholds,
        Verdict,
        compare_results,
    )
    from .config import BenchConfig, PlannedRun, plan_runs  # noqa: F401
    from .harness import measure_overhead, run_sweep  # noqa: F401
    from .inputs import InputPool, array_pool, image_pool, model_pool, random_pool  # noqa: F401
    from .report import write_report  # noqa: F401
    from .results import (  # noqa: F401
        BenchResults,
        ResultsError,
        RunNotFound,
        RunResult,
        load_results,
        save_results,
    )
    from .runner import run_benchmark  # noqa: F401
    from .scenarios import MeasurementError, Scenario, StopRule  # noqa: F401
    from .stats import (  # noqa: F401
        LatencySummary,
        RatioInterval,
        Stability,
        bootstrap_ratio,
        check_stability,
        summarize,
    )
