"""Reading TFRecord files in batches, for ``RunInference(spec).on_batches()``.

Beam's ``ReadFromTFRecord`` handles every record as one element (reading, framing,
CRC checks and emitting in Python); on a model that scores 100,000+ elements/s that is
most of a pipeline's time. ``ReadTFRecordBatches`` hands each file to ``tf.data``, which
reads, checks and batches the records in C++ and prefetches the next batch while the
current one is scored, so Beam handles one element per batch. The batches' PCollection
is declared ``tf.Tensor``, so Beam samples their sizes with ``_coders.TensorCoder``.
"""

from __future__ import annotations

import apache_beam as beam
import tensorflow as tf
from apache_beam.io import fileio

from beam_infer import _coders
from beam_infer._errors import ConfigurationError

# The batches are declared tf.Tensor: Beam then samples their sizes with TensorCoder,
# not by pickling each sampled batch (see _coders).
_coders.register(tf.Tensor, _coders.TensorCoder)


class ReadTFRecordBatches(beam.PTransform):
    """Reads TFRecord files as batches: one 1-D string ``tf.Tensor`` of records per batch.

    Feed the batches to ``RunInference(spec).on_batches()``; ``batch.numpy()`` gives
    the records as a numpy array of bytes. Files are spread over workers, but a file is
    read whole by one worker (it is not split), so write at least as many files as
    workers. Paths are read by TensorFlow's file systems (local, ``gs://``, ...).

    Args:
        file_pattern: A glob of TFRecord files, as ``beam.io.ReadFromTFRecord`` takes.
        batch_size: Records per batch; the last batch of each file may be smaller.
        compression_type: ``""`` (none), ``"GZIP"`` or ``"ZLIB"``, as ``tf.data`` names
            them.

    Raises:
        ConfigurationError: ``batch_size`` is not a positive integer, or
            ``compression_type`` is not one of the above.

    Example:
        >>> batches = p | bi.ReadTFRecordBatches("gs://bucket/in-*.tfrecord", batch_size=1024)
        >>> results = batches | bi.RunInference(spec, output=bi.Output.RESULT).on_batches()
    """

    def __init__(self, file_pattern: str, *, batch_size: int, compression_type: str = ""):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(
                f"ReadTFRecordBatches batch_size must be a positive integer; got "
                f"{batch_size!r}. Pass the records per batch, e.g. batch_size=1024."
            )
        if compression_type not in ("", "GZIP", "ZLIB"):
            raise ConfigurationError(
                f"ReadTFRecordBatches compression_type must be '', 'GZIP' or 'ZLIB'; got "
                f"{compression_type!r}."
            )
        self._pattern = file_pattern
        self._batch_size = batch_size
        self._compression = compression_type

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "MatchFiles" >> fileio.MatchFiles(self._pattern)
                | "Paths" >> beam.Map(_path)
                | "Spread" >> beam.Reshuffle()
                | "ReadBatches" >> beam.ParDo(_ReadBatches(self._batch_size,
                                                           self._compression))
                .with_output_types(tf.Tensor))


def _path(metadata: fileio.FileMetadata) -> str:
    return metadata.path


class _ReadBatches(beam.DoFn):
    def __init__(self, batch_size: int, compression_type: str):
        self._batch_size = batch_size
        self._compression = compression_type

    def process(self, path: str):
        dataset = tf.data.TFRecordDataset(path, compression_type=self._compression)
        yield from dataset.batch(self._batch_size).prefetch(2)
