-- Issue 15 item 4: the over-optimisation watchdog. A `spotcheck` run samples a PPO run's
-- √KL-grid checkpoints and its starting policy on held-out prompts and imports blind pairwise
-- items (policy at √KL vs start); a schedule's next step can wait until its spot check passes.

-- A new kind of run (not used in this transaction: PostgreSQL refuses a new enum value in the
-- transaction that adds it).
ALTER TYPE run_kind ADD VALUE IF NOT EXISTS 'spotcheck';

-- When a gated spot check passed (its win rate against the start at the last grid point reached
-- the threshold over enough judgements): the runs chained after it are claimable from then on.
ALTER TABLE runs ADD COLUMN gate_passed_at timestamptz;

-- The items a spot check imported, found by the run that imported them.
CREATE INDEX items_spotcheck_run ON items (project_id, (metadata->>'spotcheck_run')) WHERE metadata ? 'spotcheck_run';
