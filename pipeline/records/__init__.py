"""The records: every SQL statement of newswatch, one module per entity.

``feeds``, ``articles``, ``stories``, ``alerts`` and ``runs`` own their tables (declared in
``pipeline/schema.py``, created and evolved only by the Alembic migrations in
``pipeline/migrations``); ``Store`` is the one object callers hold (``open_store``), and no
module outside this package reads or writes a table itself.
"""

from pipeline.records.articles import entry_fingerprint, index_fingerprint
from pipeline.records.engine import utcnow
from pipeline.records.feeds import FeedRow
from pipeline.records.store import Store, open_store

__all__ = ["FeedRow", "Store", "entry_fingerprint", "index_fingerprint", "open_store", "utcnow"]
