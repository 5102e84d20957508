-- A run's kind and status as PostgreSQL enums, the types the platform's `RunKind` and
-- `RunStatus` map to (until now text columns with CHECKs).
-- Forward-only: never edit once landed.

CREATE TYPE run_kind AS ENUM ('rm', 'sft', 'ppo', 'dpo', 'generate');
CREATE TYPE run_status AS ENUM ('queued', 'running', 'succeeded', 'failed', 'cancelled');

-- The claimable index's predicate compares status with text; it is built again below.
DROP INDEX runs_claimable;
ALTER TABLE runs DROP CONSTRAINT runs_kind_check, DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ALTER COLUMN status DROP DEFAULT;
ALTER TABLE runs ALTER COLUMN kind TYPE run_kind USING kind::run_kind,
                 ALTER COLUMN status TYPE run_status USING status::run_status;
ALTER TABLE runs ALTER COLUMN status SET DEFAULT 'queued';
CREATE INDEX runs_claimable ON runs (seq) WHERE status IN ('queued', 'running');
