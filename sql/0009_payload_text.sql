-- Outbox payloads delivered as written.
--
-- payload_text: the JSON text `enqueue` wrote, so the relay hands sinks the payload with its keys
-- in the order the application gave them (jsonb sorts object keys by length, then bytes, and
-- normalises numbers: {"b":1,"a":2} came back as {"a": 2, "b": 1}). The relay parses this text,
-- and JSON.stringify of that parse gives back the same bytes, so every built-in sink sends the
-- payload byte for byte as enqueue serialised it. `payload` (jsonb) is still written, from the
-- same parameter, for queries, `pg-once outbox dead` and anyone reading the table.
-- Rows written before this column existed (or by a client of an earlier version during a rolling
-- upgrade) have payload_text NULL; the relay then falls back to `payload`.
--
-- No new grants: the app role inserts and the relay role reads whole rows (table-level grants).
-- Adding a nullable column without a default rewrites nothing, whatever the table's size.

ALTER TABLE once.outbox_events ADD COLUMN payload_text text;
