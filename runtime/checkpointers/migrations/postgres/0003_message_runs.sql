-- treadle checkpoints, schema 3: the message log in runs. A row of `messages` holds `count`
-- consecutive messages of the session's log from position `seq` on, as one JSON array of
-- {"role": …, "content": …} (`json`, so any text round-trips). A step appends its own messages as
-- one row; a state that starts with many messages is stored in rows of up to 1,000. Reading
-- positions [start, end) selects the rows with seq in (start - 1000, end), so the bound on `count`
-- is part of the format. Read one message with
--   SELECT m.seq + t.i - 1 AS position, t.message->>'content'
--   FROM messages m, json_array_elements(m.messages) WITH ORDINALITY AS t(message, i)
--   WHERE m.session_id = 's1' ORDER BY position;
-- Each row written by schema 2 (one message) becomes a run of one.
ALTER TABLE messages RENAME COLUMN message TO messages;
ALTER TABLE messages ALTER COLUMN messages TYPE JSON USING json_build_array(messages);
ALTER TABLE messages ADD COLUMN count INTEGER NOT NULL DEFAULT 1 CHECK (count BETWEEN 1 AND 1000);
ALTER TABLE messages ALTER COLUMN count DROP DEFAULT;
