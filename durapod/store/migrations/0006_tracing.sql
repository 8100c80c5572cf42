-- The W3C traceparent of the run's root span (its trigger's), set once when the record is
-- made: every later span of the run, from any replica or pod, belongs to this trace.
-- NULL: the run was made while tracing was off.
ALTER TABLE runs ADD COLUMN traceparent text;
