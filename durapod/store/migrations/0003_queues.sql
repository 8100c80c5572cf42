-- Queues: a run holds a slot of its queue from admission until its pod ends. Slots are
-- claimed in transactions that lock the queue's row, so every operator replica sees the
-- same count; a queue without a limit admits at once.

CREATE TABLE queues (
    namespace         text NOT NULL,
    name              text NOT NULL,
    concurrency_limit integer CHECK (concurrency_limit >= 1),
    key_limit         integer CHECK (key_limit >= 1),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name)
);

ALTER TABLE runs
    ADD COLUMN queue text NOT NULL DEFAULT 'default',
    ADD COLUMN concurrency_key text,
    ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN queued_at timestamptz,
    ADD COLUMN holds_slot boolean NOT NULL DEFAULT false;

CREATE INDEX runs_waiting_for_slot ON runs (namespace, queue, priority DESC, queued_at)
    WHERE queued_at IS NOT NULL AND NOT holds_slot;
CREATE INDEX runs_holding_slot ON runs (namespace, queue, concurrency_key) WHERE holds_slot;
