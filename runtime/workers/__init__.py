"""Scale-out: worker processes that share one PostgreSQL work queue (``queue``) and run the
sessions they claim (``worker``); see docs/scale-out.md."""
