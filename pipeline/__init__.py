"""newswatch: scheduled news monitoring — feeds, article text, stories, search and alerts.

The library imports no Airflow; DAGs in ``dags/`` and the plugin in ``plugins/`` wrap it.
"""

__version__ = "0.1.0"
