"""The five run.py actions. Each takes the run config, the loaded model and the
backends, prints a human-readable summary and returns a JSON-ready dict."""
