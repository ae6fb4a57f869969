-- treadle checkpoints, schema 4: a step write does only the work that reads need. The foreign keys
-- from `steps` and `messages` to `sessions` go: each key check ran a query and locked the session
-- row again for every written row, in the statement that had just updated that row. Every write
-- stores its rows in the transaction that creates or moves the session's head, so no row names a
-- session without one; deleting a session deletes its steps and messages in the transaction that
-- deletes its head. The (session_id, created_at) index goes too: no query reads it, and every step
-- paid an index insert for it.
ALTER TABLE steps DROP CONSTRAINT IF EXISTS steps_session_id_fkey;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_session_id_fkey;
DROP INDEX IF EXISTS steps_session_created_at;
