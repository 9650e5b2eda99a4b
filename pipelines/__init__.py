"""Runnable jobs built on beam_infer, following Beam's example contract:
``run(argv=None, save_main_session=True, test_pipeline=None) -> PipelineResult``."""
