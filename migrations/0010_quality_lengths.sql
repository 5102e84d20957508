-- Label quality reads how long each response and prompt is (reading speed, the preference for
-- the longer response) for every judgement. Measured per view, `length(text)` detoasted every
-- response of the project (157 MB on 100,000 judgements) and took 1.1-1.4 s of the quality
-- report's 5 s. The lengths are now stored when a row is written, and an index serves each
-- item's response lengths in position order without reading the texts.
-- Forward-only: never edit once landed.

ALTER TABLE responses ADD COLUMN chars integer GENERATED ALWAYS AS (length(text)) STORED;
ALTER TABLE items ADD COLUMN prompt_chars integer GENERATED ALWAYS AS (COALESCE(length(prompt_raw), length(prompt::text))) STORED;
CREATE INDEX responses_item_chars ON responses (item_id, position) INCLUDE (chars, model);
