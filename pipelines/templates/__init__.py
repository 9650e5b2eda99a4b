"""Launch files for scheduling pipelines.batch_scoring: the Dataflow Flex Template's entry
point, image and parameter metadata (see docs/batch_scoring.md)."""
