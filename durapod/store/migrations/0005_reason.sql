-- Why the run is where it is, in one word (Unschedulable, ImagePullBackOff, OOMKilled,
-- TaskError...): shown as the TaskRun's Reason column; NULL while all is well.
ALTER TABLE runs ADD COLUMN reason text;

-- A pod that never started (unschedulable, image not pulled) before its start deadline.
ALTER TABLE pods DROP CONSTRAINT pods_outcome_check;
ALTER TABLE pods ADD CONSTRAINT pods_outcome_check
    CHECK (outcome IN ('Succeeded', 'Suspended', 'TaskError', 'Crashed', 'Evicted',
                       'OOMKilled', 'TimedOut', 'Cancelled', 'NotStarted'));

-- A pod's token names the pod; the API finds its run by the pod's name.
CREATE INDEX pods_by_name ON pods (name);
