-- Per-item instructions from the import's "instructions" field, shown to labellers above the
-- prompt (Markdown, rendered and sanitized on the server). NULL when an item has none.
-- Forward-only: never edit once landed.

ALTER TABLE items ADD COLUMN instructions text;
