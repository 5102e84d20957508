-- Sweeps read the head of the project's queue order (issue 15 item 2). A submission closes its own
-- item only when no lease scan holds the item's row; the complete items a race leaves open are
-- closed by the sweeps that leases run now and then, which read the first open items in import
-- order. 'uncertainty' and 'thompson' leases read the head of the priority order instead
-- (`items_open_priority`), and 'newest-first' leases the newest items, so the complete items left
-- open there were never swept: each lease walked past all of them, fetching each row and counting
-- its tasks, and the walk grew as labelling went on. On 100,000 open items (32 labellers in 2
-- batch lanes, 19,200 judgements): 0.98 ms and 1,116 buffers a lease scan, then 324 such items at
-- the head; now 0.12 ms and 130 buffers (fifo: 0.14 ms, 214), and 11 items. Each sweep now reads
-- the head its project's leases read, through the same index. tests/api/queue.rs
-- (priority_queue_leases_and_sweeps_…, a_complete_item_left_open_…) checks both. Forward-only:
-- never edit once landed.

-- ==== function rl_sweep ====

-- Closes complete items near the head of the project's queue, in the order its strategy leases
-- them ('fifo' import order, 'newest-first' newest first, 'uncertainty' and 'thompson' highest
-- priority first): the head a lease scan walks. `is_open` only keeps the queue's index small
-- (rl_taken is the truth), so this may lag: a submission closes its own item when it sees it
-- complete, and leases sweep now and then for the ones a race left open. Only items whose row is
-- not locked are closed (a batch may hold a complete item's lock: its lease scan locked it
-- before the last submission committed); the next sweep closes those. An item needs the
-- project's overlap plus its extra labellers.
CREATE OR REPLACE FUNCTION rl_sweep(p_project uuid, p_overlap int, p_limit int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_strategy queue_strategy;
    v_head     uuid[];
BEGIN
    SELECT pr.queue_strategy INTO v_strategy FROM projects pr WHERE pr.id = p_project;
    -- One statement per order, each an index scan of the head the leases read.
    IF v_strategy IN ('uncertainty', 'thompson') THEN
        SELECT array_agg(h.id) INTO v_head
        FROM (SELECT h.id FROM items h WHERE h.project_id = p_project AND h.is_open ORDER BY h.queue_priority DESC NULLS LAST, h.seq LIMIT p_limit) h;
    ELSIF v_strategy = 'newest-first' THEN
        SELECT array_agg(h.id) INTO v_head
        FROM (SELECT h.id FROM items h WHERE h.project_id = p_project AND h.is_open ORDER BY h.seq DESC LIMIT p_limit) h;
    ELSE
        SELECT array_agg(h.id) INTO v_head
        FROM (SELECT h.id FROM items h WHERE h.project_id = p_project AND h.is_open ORDER BY h.seq LIMIT p_limit) h;
    END IF;
    UPDATE items i SET is_open = false, done_count = c.n
    FROM (SELECT it.id, head.n FROM (
              SELECT h.id, h.extra_labellers, (SELECT count(*) FROM tasks t WHERE t.item_id = h.id AND t.status = 'submitted')::int AS n
              FROM items h WHERE h.id = ANY (v_head)) head
          JOIN items it ON it.id = head.id
          WHERE head.n >= p_overlap + head.extra_labellers
          FOR NO KEY UPDATE OF it SKIP LOCKED) c
    WHERE i.id = c.id AND i.is_open;
END $$;
