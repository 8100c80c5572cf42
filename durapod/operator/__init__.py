"""The durapod operator (kopf): turns TaskRuns into pods and pod outcomes into run status."""
