"""The adoption report: one registered model version's story, from release to serving.

``uptake report`` (``registry.report.cli``) gathers a version from MLflow (``gather``),
draws its plots (``plots``) and writes a self-contained HTML page and a Markdown twin
(``render``); the same plots go to the version's MLflow run under ``report/``.
``write.write_summary`` renders the adoption table of every version (the demo's closing table).

Import from the modules themselves (``write``, ``gather``, ``model``, ``render``): this package
imports nothing, so ``uptake``'s command line, which registers ``registry.report.cli`` for
every command, does not load MLflow (about a second and a half) to print a config error.
"""
