"""The newswatch web UI and JSON API (FastAPI): search, stories, feed health, alerts.

``pipeline.web.app.create_app(settings)`` builds the app; ``pipeline.web.serve.serve(settings)``
runs it with uvicorn; the Airflow plugin (``plugins/newswatch_plugin.py``) mounts it in the
Airflow API server. Nothing is imported here, so the package costs nothing until used.
"""
